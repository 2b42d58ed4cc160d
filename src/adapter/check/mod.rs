//! `pass@1` checks for generation tasks: whether one greedy answer is right.
//!
//! CruxEval-O compares data: the answer, read as a Python literal and never run, must equal the
//! recorded output (Python's `==`), so `0 or 1` or `__import__('os')._exit(0)` are simply not
//! answers. CruxEval-I calls the data set's own function on the answer's arguments, read as
//! literals, inside the [`sandbox`]. A free-form program check exists for tasks of your own; it
//! runs in the same sandbox, and an answer can game it, so it is for trusted setups only.

pub mod literal;
pub mod sandbox;

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How an answer is judged. Each string is a template over the row's fields (`{output}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The answer, read as a Python literal, equals `expected` read the same way. Runs nothing.
    Literal { expected: String },
    /// `code` defines `function`; calling it on the answer, read as literal arguments up to the
    /// call's closing `)`, returns a value equal to `expected`. The call runs in the sandbox.
    Call { code: String, function: String, expected: String },
    /// A Python program with `{prediction}` that must exit with status 0, run in the sandbox.
    /// An answer can end it early with status 0: use it only where answers are trusted.
    Program { template: String },
}

/// Earlier adapter files recorded the check as a program template (`check_template`).
#[derive(Deserialize)]
#[serde(untagged)]
enum CheckOrProgram {
    Check(Check),
    Program(String),
}

/// `check` (or the older `check_template`) from a task spec.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Check>, D::Error> {
    Ok(Option::<CheckOrProgram>::deserialize(d)?.map(|c| match c {
        CheckOrProgram::Check(c) => c,
        CheckOrProgram::Program(template) => Check::Program { template },
    }))
}

impl Check {
    /// Whether `prediction` passes for this row. An error only when the sandbox cannot run.
    pub fn passes(&self, fields: &BTreeMap<String, String>, prediction: &str, limits: &sandbox::Limits) -> Result<bool> {
        let fill = |t: &str| super::task::fill_raw(t, fields);
        match self {
            Check::Literal { expected } => Ok(match (literal::parse(prediction), literal::parse(&fill(expected))) {
                (Ok(p), Ok(e)) => p.py_eq(&e),
                _ => false,
            }),
            Check::Call { code, function, expected } => {
                let Ok(args) = literal::parse_call_arguments(prediction) else { return Ok(false) };
                // The call is rebuilt from the parsed values: no text of the answer reaches Python.
                let mut call: Vec<String> = args.positional.iter().map(literal::Value::to_python).collect();
                call.extend(args.keywords.iter().map(|(k, v)| format!("{k}={}", v.to_python())));
                let program = format!("{}\nimport sys\nsys.exit(0 if {function}({}) == ({}) else 1)\n", fill(code), call.join(", "), fill(expected));
                Ok(sandbox::Sandbox::get()?.run_python(&program, limits)? == sandbox::Outcome::Passed)
            }
            Check::Program { template } => {
                let mut row = fields.clone();
                row.insert("prediction".into(), prediction.to_string());
                let program = super::task::fill_raw(template, &row);
                Ok(sandbox::Sandbox::get()?.run_python(&program, limits)? == sandbox::Outcome::Passed)
            }
        }
    }

    /// Whether judging runs code (and so needs the sandbox).
    pub fn runs_code(&self) -> bool {
        !matches!(self, Check::Literal { .. })
    }
}
