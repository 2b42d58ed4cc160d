//! Typed, strict reads of a JSON config's fields, with the two kinds of refusal: a value of the
//! wrong type, and a value lopa does not implement.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

/// Typed reads of one JSON object's fields (null counts as absent).
pub(super) struct Fields<'a> {
    pub o: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        self.o.get(k).filter(|v| !v.is_null())
    }
    pub fn usize(&self, k: &str) -> Result<Option<usize>> {
        self.get(k).map(|v| v.as_u64().map(|n| n as usize).ok_or_else(|| bad(k, v, "a non-negative integer"))).transpose()
    }
    pub fn need(&self, k: &str) -> Result<usize> {
        self.usize(k)?.ok_or_else(|| Error::Config(format!("config.json has no `{k}`")))
    }
    pub fn f64(&self, k: &str) -> Result<Option<f64>> {
        self.get(k).map(|v| v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| bad(k, v, "a finite number"))).transpose()
    }
    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        self.get(k).map(|v| v.as_bool().ok_or_else(|| bad(k, v, "true or false"))).transpose()
    }
    pub fn str(&self, k: &str) -> Result<Option<&'a str>> {
        self.get(k).map(|v| v.as_str().ok_or_else(|| bad(k, v, "a string"))).transpose()
    }
}

pub(super) fn bad(k: &str, v: &Value, want: &str) -> Error {
    Error::Config(format!("`{k}` is {v}, expected {want}"))
}

/// A refusal: `k` has a value lopa does not implement.
pub(super) fn refuse(k: &str, v: &Value, why: &str) -> Error {
    Error::Config(format!("`{k}` = {v} is not supported: {why}"))
}
