//! How a generation task's answer is judged (`pass@1`): the description that an adapter file
//! records. Judging itself (the literal parser and the sandbox) is evaluation's, in
//! `training::judge`, and never part of the browser build.

use serde::{Deserialize, Serialize};

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
    /// Whether judging runs code (and so needs the sandbox).
    pub fn runs_code(&self) -> bool {
        !matches!(self, Check::Literal { .. })
    }
}
