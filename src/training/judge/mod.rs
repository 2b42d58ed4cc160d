//! Judging a generation task's answers (`pass@1`): whether one greedy answer is right.
//!
//! CruxEval-O compares data: the answer, read as a Python literal and never run, must equal the
//! recorded output (Python's `==`), so `0 or 1` or `__import__('os')._exit(0)` are simply not
//! answers. CruxEval-I calls the data set's own function on the answer's arguments, read as
//! literals, inside the [`sandbox`]. A free-form program check exists for tasks of your own; it
//! runs in the same sandbox, and an answer can game it, so it is for trusted setups only.

pub mod literal;
pub mod sandbox;

use crate::error::Result;
use crate::task::template::fill_raw;
use crate::task::{Check, TaskSpec};
use std::collections::BTreeMap;

/// Whether `prediction` passes `check` for this row. An error only when the sandbox cannot run.
pub fn passes(check: &Check, fields: &BTreeMap<String, String>, prediction: &str, limits: &sandbox::Limits) -> Result<bool> {
    let fill = |t: &str| fill_raw(t, fields);
    match check {
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
            let program = fill_raw(template, &row);
            Ok(sandbox::Sandbox::get()?.run_python(&program, limits)? == sandbox::Outcome::Passed)
        }
    }
}

/// `pass@1` for one row of a task (false when the task has no check), within the default limits.
pub fn task_passes(task: &TaskSpec, fields: &BTreeMap<String, String>, prediction: &str) -> Result<bool> {
    match &task.check {
        Some(check) => passes(check, fields, prediction, &sandbox::Limits::default()),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CruxEval row whose function doubles its argument: f(3) == 6.
    fn doubling() -> BTreeMap<String, String> {
        [("code", "def f(x):\n    return x * 2"), ("input", "3"), ("output", "6")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn cruxeval_o_compares_literals_and_runs_nothing() {
        let spec = TaskSpec::builtin("cruxeval-o").unwrap();
        let check = |pred: &str| task_passes(&spec, &doubling(), pred).unwrap();
        assert!(check("6") && check(" 6 ") && check("6.0") && check("(6)"), "CruxEval compares values, not text");
        // Not literals: each fails without anything being run.
        for pred in ["7", "f(3)", "(lambda: f(3))()", "", "0 or 6", "6 or 1", "__import__('os')._exit(0)", "__import__('time').sleep(30) or 6", "6 if True else 0"] {
            assert!(!check(pred), "{pred:?} must fail");
        }
    }

    #[test]
    fn cruxeval_i_calls_the_rows_function_on_literal_arguments() {
        let spec = TaskSpec::builtin("cruxeval-i").unwrap();
        let check = |pred: &str| task_passes(&spec, &doubling(), pred).unwrap();
        assert!(check("3)") && check("x=3)") && check("3.0)  # three"));
        for pred in ["4)", "3", "3) or True", "__import__('os')._exit(0))", "*[3])", "3, 4)"] {
            assert!(!check(pred), "{pred:?} must fail");
        }
    }
}
