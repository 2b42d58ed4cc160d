//! A task: how a data row becomes the frozen model's prompt, the encoder's text, and the label
//! word or answer the model should produce. Classification reads the label word (verbalizer) at
//! the slot after the template: training takes the cross-entropy over the full vocabulary there,
//! prediction the argmax over the label words only (the LoPA paper's protocol). Generation tasks
//! produce free text after the template, judged by a [`Check`].
//!
//! Built in: SST-2, RTE, MRPC, CruxEval-O and -I; any TSV or JSONL with a [`TaskSpec`] of your
//! own. Reading rows from files is training's (`training::examples`), scoring is evaluation's.

pub mod check;
pub mod template;

pub use check::Check;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the frozen model is asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// One label word after the template (a verbalizer).
    #[default]
    Classification,
    /// Free text after the template; loss on the answer tokens only.
    Generation,
}

/// How a task's dev score is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Metric {
    /// Share of labels predicted right (classification).
    #[default]
    #[serde(rename = "accuracy")]
    Accuracy,
    /// Binary F1 of `positive_label` (classification; accuracy is reported beside it).
    #[serde(rename = "f1")]
    F1,
    /// The greedy answer equals the reference after trimming (generation).
    #[serde(rename = "exact_match")]
    ExactMatch,
    /// The greedy answer passes the task's check (generation, CruxEval).
    #[serde(rename = "pass@1")]
    PassAt1,
}

impl Metric {
    /// The name in adapter.json and metrics.jsonl.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::ExactMatch => "exact_match",
            Metric::PassAt1 => "pass@1",
        }
    }

    /// The name of the main score printed per epoch: classification reports accuracy (F1 beside it).
    pub fn headline(self) -> &'static str {
        match self {
            Metric::Accuracy | Metric::F1 => "accuracy",
            m => m.name(),
        }
    }
}

/// How to turn a data row into a prompt and a label (or an answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    #[serde(default)]
    pub kind: TaskKind,
    /// Prompt for the frozen model; `{column}` is replaced by the row's value. The label word is
    /// the next token after it.
    pub template: String,
    /// Text the encoder sees (f(x)); same placeholders.
    pub encoder_template: String,
    /// Column holding the label.
    pub label_column: String,
    /// Label value → label word (a single token of the frozen model, usually with a leading space).
    pub label_words: BTreeMap<String, String>,
    /// The dev score.
    pub metric: Metric,
    #[serde(default)]
    pub positive_label: Option<String>,
    /// Generation tasks: the answer text (teacher-forced in training, compared in evaluation).
    #[serde(default)]
    pub answer_template: Option<String>,
    /// `pass@1`: how an answer is judged.
    #[serde(default, alias = "check_template", deserialize_with = "check::deserialize")]
    pub check: Option<Check>,
    /// Rows of one file used for training / evaluation, `[start, end)` (CruxEval: 0-399 / 400-799).
    #[serde(default)]
    pub train_rows: Option<[usize; 2]>,
    #[serde(default)]
    pub dev_rows: Option<[usize; 2]>,
}

impl TaskSpec {
    /// A built-in task by name.
    pub fn builtin(name: &str) -> Result<Self> {
        let words = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(match name {
            // Paper: "S . It was ___ ." with terrible / great.
            "sst2" => TaskSpec {
                name: name.into(),
                template: "{sentence} It was".into(),
                encoder_template: "{sentence}".into(),
                label_column: "label".into(),
                label_words: words(&[("0", " terrible"), ("1", " great")]),
                metric: Metric::Accuracy,
                ..Self::classification()
            },
            // Paper: "S1 ? ___ , S2" with Yes / No; a causal model must see S2 before the slot.
            "rte" => TaskSpec {
                name: name.into(),
                template: "{sentence1}\nQuestion: {sentence2} Yes or No?\nAnswer:".into(),
                encoder_template: "{sentence1} {sentence2}".into(),
                label_column: "label".into(),
                label_words: words(&[("entailment", " Yes"), ("not_entailment", " No")]),
                metric: Metric::Accuracy,
                ..Self::classification()
            },
            "mrpc" => TaskSpec {
                name: name.into(),
                template: "{#1 String}\nQuestion: Does this mean the same as \"{#2 String}\"? Yes or No?\nAnswer:".into(),
                encoder_template: "{#1 String} {#2 String}".into(),
                label_column: "Quality".into(),
                label_words: words(&[("1", " Yes"), ("0", " No")]),
                metric: Metric::F1,
                positive_label: Some("1".into()),
                ..Self::classification()
            },
            // CruxEval-O: predict the output of a Python function for a given input.
            "cruxeval-o" => TaskSpec {
                name: name.into(),
                kind: TaskKind::Generation,
                template: "{code}\nassert f({input}) == ".into(),
                encoder_template: "{code}\n{input}".into(),
                answer_template: Some("{output}\n".into()),
                // CruxEval's check: the predicted literal equals the recorded output.
                check: Some(Check::Literal { expected: "{output}".into() }),
                metric: Metric::PassAt1,
                train_rows: Some([0, 400]),
                dev_rows: Some([400, 800]),
                ..Self::classification()
            },
            // CruxEval-I: predict an input for which the function returns the given output.
            "cruxeval-i" => TaskSpec {
                name: name.into(),
                kind: TaskKind::Generation,
                template: "{code}\nassert {output} == f(".into(),
                encoder_template: "{code}\n{output}".into(),
                answer_template: Some("{input})\n".into()),
                // The data set's function, called on the predicted literal arguments.
                check: Some(Check::Call { code: "{code}".into(), function: "f".into(), expected: "{output}".into() }),
                metric: Metric::PassAt1,
                train_rows: Some([0, 400]),
                dev_rows: Some([400, 800]),
                ..Self::classification()
            },
            _ => return Err(Error::Config(format!("unknown task `{name}` (sst2, rte, mrpc, cruxeval-o, cruxeval-i, or a --task-spec JSON)"))),
        })
    }

    fn classification() -> Self {
        TaskSpec {
            name: String::new(),
            kind: TaskKind::Classification,
            template: String::new(),
            encoder_template: String::new(),
            label_column: String::new(),
            label_words: BTreeMap::new(),
            metric: Metric::Accuracy,
            positive_label: None,
            answer_template: None,
            check: None,
            train_rows: None,
            dev_rows: None,
        }
    }

    /// Label values in a fixed order (class index = position).
    pub fn labels(&self) -> Vec<&str> {
        self.label_words.keys().map(String::as_str).collect()
    }

    /// The frozen model's prompt and the encoder's text for one row. Classification fields are
    /// trimmed (TSV text); generation fields keep their whitespace (code).
    pub fn render(&self, row: &BTreeMap<String, String>) -> (String, String) {
        let fill = if self.kind == TaskKind::Generation { template::fill_raw } else { template::fill };
        (fill(&self.template, row), fill(&self.encoder_template, row))
    }

    /// The fields an input fills: the placeholders of the prompt and the encoder's text.
    pub fn input_columns(&self) -> Vec<String> {
        let mut names = template::placeholders(&self.template);
        names.extend(template::placeholders(&self.encoder_template));
        names.sort();
        names.dedup();
        names
    }

    /// Every column a data row must have: the input's, and the answer's placeholders
    /// (generation) or the label column (classification).
    pub fn columns(&self) -> Result<Vec<String>> {
        let mut needed = self.input_columns();
        if self.kind == TaskKind::Generation {
            let answer = self.answer_template.as_deref().ok_or_else(|| Error::Config(format!("task `{}`: generation needs answer_template", self.name)))?;
            needed.extend(template::placeholders(answer));
        } else {
            needed.push(self.label_column.clone());
        }
        needed.sort();
        needed.dedup();
        Ok(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adapter files written before `check` recorded a program template; it still loads, as a
    /// sandboxed program check.
    #[test]
    fn older_check_template_loads() {
        let mut v = serde_json::to_value(TaskSpec::builtin("cruxeval-o").unwrap()).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("check");
        o.insert("check_template".into(), "{code}\nassert {output} == {prediction}".into());
        o.insert("reject_if_contains".into(), "f({input})".into());
        let spec: TaskSpec = serde_json::from_value(v).unwrap();
        assert_eq!(spec.check, Some(Check::Program { template: "{code}\nassert {output} == {prediction}".into() }));
        let round: TaskSpec = serde_json::from_str(&serde_json::to_string(&TaskSpec::builtin("cruxeval-i").unwrap()).unwrap()).unwrap();
        assert_eq!(round, TaskSpec::builtin("cruxeval-i").unwrap());
    }

    #[test]
    fn a_row_must_fill_every_column_the_task_reads() {
        assert_eq!(TaskSpec::builtin("mrpc").unwrap().columns().unwrap(), ["#1 String", "#2 String", "Quality"]);
        assert_eq!(TaskSpec::builtin("cruxeval-o").unwrap().columns().unwrap(), ["code", "input", "output"]);
        let broken = TaskSpec { answer_template: None, ..TaskSpec::builtin("cruxeval-i").unwrap() };
        assert_eq!(broken.columns().unwrap_err().to_string(), "config: task `cruxeval-i`: generation needs answer_template");
    }
}
