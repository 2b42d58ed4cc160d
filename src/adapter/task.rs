//! Classification tasks through a frozen causal LM: a template whose next token is the label
//! word (verbalizer). Loss = cross-entropy of the label word over the full vocabulary at that
//! slot; prediction = argmax over the label words only (the LoPA paper's protocol).
//!
//! Built in: SST-2, RTE, MRPC from `../shared/data` layouts; any TSV or JSONL with a
//! [`TaskSpec`] of your own.

use super::check::{sandbox::Limits, Check};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    #[serde(default, alias = "check_template", deserialize_with = "super::check::deserialize")]
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

    /// The data files of a built-in task under `data_dir`: (train, dev).
    pub fn default_files(&self, data_dir: &Path) -> (PathBuf, PathBuf) {
        if self.name.starts_with("cruxeval") {
            let f = data_dir.join("cruxeval/cruxeval.jsonl");
            return (f.clone(), f);
        }
        let d = data_dir.join(&self.name);
        (d.join("train.tsv"), d.join("dev.tsv"))
    }

    /// `pass@1` for one row (false when the task has no check). An error only when the check
    /// needs the sandbox and it cannot run.
    pub fn passes(&self, fields: &BTreeMap<String, String>, prediction: &str) -> Result<bool> {
        match &self.check {
            Some(check) => check.passes(fields, prediction, &Limits::default()),
            None => Ok(false),
        }
    }

    /// Label values in a fixed order (class index = position).
    pub fn labels(&self) -> Vec<&str> {
        self.label_words.keys().map(String::as_str).collect()
    }

    /// The frozen model's prompt and the encoder's text for one row. Classification fields are
    /// trimmed (TSV text); generation fields keep their whitespace (code).
    pub fn render(&self, row: &BTreeMap<String, String>) -> (String, String) {
        let fill = if self.kind == TaskKind::Generation { fill_raw } else { fill };
        (fill(&self.template, row), fill(&self.encoder_template, row))
    }

    /// The `{column}` placeholders of a template.
    pub fn placeholders(template: &str) -> Vec<String> {
        let mut out = vec![];
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else { break };
            out.push(rest[i + 1..i + j].to_string());
            rest = &rest[i + j + 1..];
        }
        out
    }
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Prompt for the frozen model.
    pub prompt: String,
    /// Text for the encoder.
    pub encoder_text: String,
    /// Class index into [`TaskSpec::labels`] (0 for generation tasks).
    pub label: usize,
    /// Generation tasks: the reference answer.
    pub answer: String,
    /// Generation tasks: the row's fields (for the pass@1 check).
    pub fields: BTreeMap<String, String>,
    /// 1-based line in the source file (for error messages).
    pub line: usize,
}

/// Replace `{column}` by the row's values, trimmed (TSV text fields).
fn fill(template: &str, row: &BTreeMap<String, String>) -> String {
    fill_with(template, row, str::trim)
}

/// Fill without trimming (code keeps its whitespace).
pub fn fill_raw(template: &str, row: &BTreeMap<String, String>) -> String {
    fill_with(template, row, |v| v)
}

/// One pass over the template: a value that itself contains `{column}` (code with an f-string, a
/// user's text) is inserted as it is, never filled again. Braces that name no column stay.
fn fill_with(template: &str, row: &BTreeMap<String, String>, value: fn(&str) -> &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('}').and_then(|j| row.get(&after[..j]).map(|v| (j, v))) {
            Some((j, v)) => {
                out.push_str(value(v));
                rest = &after[j + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Read examples from a `.tsv` (header row, tab-separated, no quoting) or `.jsonl` file.
/// Every problem is reported with file and line before anything else happens.
pub fn load_examples(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    load_rows(spec, path, None)
}

/// Like [`load_examples`], keeping only data rows `[start, end)` (0-based, header excluded).
pub fn load_rows(spec: &TaskSpec, path: &Path, rows_range: Option<[usize; 2]>) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let at = |line: usize, msg: String| Error::Input(format!("{}:{line}: {msg}", path.display()));
    let mut needed = TaskSpec::placeholders(&spec.template);
    needed.extend(TaskSpec::placeholders(&spec.encoder_template));
    let generation = spec.kind == TaskKind::Generation;
    if generation {
        let answer = spec.answer_template.as_deref().ok_or_else(|| Error::Config(format!("task `{}`: generation needs answer_template", spec.name)))?;
        needed.extend(TaskSpec::placeholders(answer));
    } else {
        needed.push(spec.label_column.clone());
    }
    needed.sort();
    needed.dedup();
    let labels = spec.labels();
    let mut rows: Vec<(usize, BTreeMap<String, String>)> = vec![];
    let jsonl = path.extension().is_some_and(|e| e == "jsonl" || e == "json");
    if jsonl {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(i + 1, format!("invalid JSON: {e}")))?;
            let obj = v.as_object().ok_or_else(|| at(i + 1, "expected a JSON object".into()))?;
            let row = obj
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect();
            rows.push((i + 1, row));
        }
    } else {
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else {
            return Err(Error::Input(format!("{}: empty file", path.display())));
        };
        let header: Vec<&str> = header.split('\t').collect();
        for c in &needed {
            if !header.contains(&c.as_str()) {
                return Err(at(1, format!("missing column `{c}` (header has: {})", header.join(", "))));
            }
        }
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != header.len() {
                return Err(at(i + 1, format!("expected {} tab-separated fields, found {}", header.len(), fields.len())));
            }
            rows.push((i + 1, header.iter().zip(fields).map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        }
    }
    if let Some([a, b]) = rows_range {
        if a >= b || b > rows.len() {
            return Err(Error::Input(format!("{}: rows {a}..{b} requested, the file has {}", path.display(), rows.len())));
        }
        rows = rows.drain(a..b).collect();
    }
    let mut out = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        for c in &needed {
            if !row.contains_key(c) {
                return Err(at(line, format!("missing field `{c}`")));
            }
        }
        if generation {
            let answer = fill_raw(spec.answer_template.as_deref().unwrap_or(""), &row);
            let (prompt, encoder_text) = spec.render(&row);
            out.push(Example { prompt, encoder_text, label: 0, answer, fields: row, line });
            continue;
        }
        let label = row[&spec.label_column].trim();
        let idx = labels
            .iter()
            .position(|l| *l == label)
            .ok_or_else(|| at(line, format!("unknown label `{label}` (expected one of: {})", labels.join(", "))))?;
        let (prompt, encoder_text) = spec.render(&row);
        out.push(Example { prompt, encoder_text, label: idx, answer: String::new(), fields: BTreeMap::new(), line });
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no examples", path.display())));
    }
    Ok(out)
}

/// The shared data folder: `$LOPA_DATA`, else `../shared/data` next to the crate, else `./data`.
pub fn data_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LOPA_DATA") {
        return PathBuf::from(p);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    if beside.exists() {
        return beside;
    }
    PathBuf::from("data")
}

/// Binary F1 for the positive class and accuracy.
pub fn scores(pred: &[usize], gold: &[usize], positive: Option<usize>) -> (f64, Option<f64>) {
    let n = gold.len().max(1) as f64;
    let acc = pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / n;
    let f1 = positive.map(|pos| {
        let tp = pred.iter().zip(gold).filter(|(p, g)| **p == pos && **g == pos).count() as f64;
        let fp = pred.iter().zip(gold).filter(|(p, g)| **p == pos && **g != pos).count() as f64;
        let fneg = pred.iter().zip(gold).filter(|(p, g)| **p != pos && **g == pos).count() as f64;
        if tp == 0.0 { 0.0 } else { 2.0 * tp / (2.0 * tp + fp + fneg) }
    });
    (acc, f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lopa-tasks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn sst2_rows_become_prompts() {
        let spec = TaskSpec::builtin("sst2").unwrap();
        let ex = load_examples(&spec, &tmp("a.tsv", "sentence\tlabel\na fine film \t1\n\nawful\t0\n")).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].prompt, "a fine film It was");
        assert_eq!((ex[0].label, ex[1].label, ex[1].line), (1, 0, 4));
    }

    #[test]
    fn bad_input_is_reported_with_file_and_line() {
        let spec = TaskSpec::builtin("sst2").unwrap();
        let e = |name: &str, body: &str| load_examples(&spec, &tmp(name, body)).unwrap_err().to_string();
        assert!(e("b.tsv", "text\tlabel\nx\t1\n").ends_with("b.tsv:1: missing column `sentence` (header has: text, label)"));
        assert!(e("c.tsv", "sentence\tlabel\nx\t1\ny\t7\n").ends_with("c.tsv:3: unknown label `7` (expected one of: 0, 1)"));
        assert!(e("d.tsv", "sentence\tlabel\nx\t1\textra\n").ends_with("d.tsv:2: expected 2 tab-separated fields, found 3"));
        assert!(e("e.tsv", "").ends_with("e.tsv: empty file"));
        assert!(e("f.tsv", "sentence\tlabel\n").ends_with("f.tsv: no examples"));
        assert!(e("g.jsonl", "{\"sentence\": \"x\"}\n").ends_with("g.jsonl:1: missing field `label`"));
        assert!(e("h.jsonl", "{oops\n").contains("h.jsonl:1: invalid JSON"));
    }

    #[test]
    fn templates_are_filled_in_one_pass() {
        let row: BTreeMap<String, String> = [("input", "f'{output}' and {x}"), ("output", "3")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // A value holding `{output}` stays as it is; unknown and unmatched braces stay too.
        assert_eq!(fill_raw("{input} -> {output} {none} {", &row), "f'{output}' and {x} -> 3 {none} {");
        assert_eq!(fill("[{output}]{output}", &row), "[3]3");
    }

    #[test]
    fn cruxeval_rows_and_checks() {
        let spec = TaskSpec::builtin("cruxeval-o").unwrap();
        let p = tmp("c.jsonl", "{\"code\": \"def f(x):\\n    return x * 2\", \"input\": \"3\", \"output\": \"6\", \"id\": \"a\"}\n{\"code\": \"def f(x):\\n    return x\", \"input\": \"1\", \"output\": \"1\", \"id\": \"b\"}\n");
        let ex = load_rows(&spec, &p, Some([0, 1])).unwrap();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].prompt, "def f(x):\n    return x * 2\nassert f(3) == ");
        assert_eq!(ex[0].answer, "6\n");
        let check = |pred: &str| spec.passes(&ex[0].fields, pred).unwrap();
        assert!(check("6") && check(" 6 ") && check("6.0") && check("(6)"), "CruxEval compares values, not text");
        // Not literals: each fails without anything being run.
        for pred in ["7", "f(3)", "(lambda: f(3))()", "", "0 or 6", "6 or 1", "__import__('os')._exit(0)", "__import__('time').sleep(30) or 6", "6 if True else 0"] {
            assert!(!check(pred), "{pred:?} must fail");
        }
        let e = load_rows(&spec, &p, Some([0, 5])).unwrap_err().to_string();
        assert!(e.ends_with("c.jsonl: rows 0..5 requested, the file has 2"), "{e}");

        // CruxEval-I runs the row's own function on the predicted literal arguments.
        let spec = TaskSpec::builtin("cruxeval-i").unwrap();
        let ex = load_rows(&spec, &p, Some([0, 1])).unwrap();
        assert_eq!(ex[0].prompt, "def f(x):\n    return x * 2\nassert 6 == f(");
        let check = |pred: &str| spec.passes(&ex[0].fields, pred).unwrap();
        assert!(check("3)") && check("x=3)") && check("3.0)  # three"));
        for pred in ["4)", "3", "3) or True", "__import__('os')._exit(0))", "*[3])", "3, 4)"] {
            assert!(!check(pred), "{pred:?} must fail");
        }
    }

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
    fn f1_and_accuracy() {
        let (acc, f1) = scores(&[1, 1, 0, 0], &[1, 0, 1, 0], Some(1));
        assert_eq!(acc, 0.5);
        assert_eq!(f1, Some(0.5));
    }
}
