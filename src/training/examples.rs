//! A task's rows read from a file: a `.tsv` (header row, tab-separated, no quoting) or a
//! `.jsonl`, each row rendered into a labelled [`Example`]. Every problem is reported with file
//! and line before anything else happens.

use crate::error::{Error, Result};
use crate::task::template::fill_raw;
use crate::task::{TaskKind, TaskSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Read examples from a `.tsv` (header row, tab-separated, no quoting) or `.jsonl` file.
/// Every problem is reported with file and line before anything else happens.
pub fn load_examples(spec: &TaskSpec, path: &Path) -> Result<Vec<Example>> {
    load_rows(spec, path, None)
}

/// Like [`load_examples`], keeping only data rows `[start, end)` (0-based, header excluded).
pub fn load_rows(spec: &TaskSpec, path: &Path, rows_range: Option<[usize; 2]>) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let at = |line: usize, msg: String| Error::Input(format!("{}:{line}: {msg}", path.display()));
    let needed = spec.columns()?;
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
    let out = rows.into_iter().map(|(line, row)| example(spec, row, line).map_err(|m| at(line, m))).collect::<Result<Vec<_>>>()?;
    if out.is_empty() {
        return Err(Error::Input(format!("{}: no examples", path.display())));
    }
    Ok(out)
}

/// One row as an example (`line`: where it came from, for messages). The error says what the
/// row lacks.
pub fn example(spec: &TaskSpec, row: BTreeMap<String, String>, line: usize) -> std::result::Result<Example, String> {
    let needed = spec.columns().map_err(|e| e.to_string())?;
    if let Some(c) = needed.iter().find(|c| !row.contains_key(*c)) {
        return Err(format!("missing field `{c}`"));
    }
    let (prompt, encoder_text) = spec.render(&row);
    if spec.kind == TaskKind::Generation {
        let answer = fill_raw(spec.answer_template.as_deref().unwrap_or(""), &row);
        return Ok(Example { prompt, encoder_text, label: 0, answer, fields: row, line });
    }
    let labels = spec.labels();
    let label = row[&spec.label_column].trim();
    let idx = labels.iter().position(|l| *l == label).ok_or_else(|| format!("unknown label `{label}` (expected one of: {})", labels.join(", ")))?;
    Ok(Example { prompt, encoder_text, label: idx, answer: String::new(), fields: BTreeMap::new(), line })
}

/// The data files of a built-in task under `data_dir`: (train, dev).
pub fn default_files(task: &TaskSpec, data_dir: &Path) -> (PathBuf, PathBuf) {
    if task.name.starts_with("cruxeval") {
        let f = data_dir.join("cruxeval/cruxeval.jsonl");
        return (f.clone(), f);
    }
    let d = data_dir.join(&task.name);
    (d.join("train.tsv"), d.join("dev.tsv"))
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
    fn cruxeval_rows_become_prompts_and_answers() {
        let p = tmp("c.jsonl", "{\"code\": \"def f(x):\\n    return x * 2\", \"input\": \"3\", \"output\": \"6\", \"id\": \"a\"}\n{\"code\": \"def f(x):\\n    return x\", \"input\": \"1\", \"output\": \"1\", \"id\": \"b\"}\n");
        let spec = TaskSpec::builtin("cruxeval-o").unwrap();
        let ex = load_rows(&spec, &p, Some([0, 1])).unwrap();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].prompt, "def f(x):\n    return x * 2\nassert f(3) == ");
        assert_eq!(ex[0].answer, "6\n");
        assert_eq!(ex[0].fields["output"], "6", "the row's fields travel with it, for the check");
        let e = load_rows(&spec, &p, Some([0, 5])).unwrap_err().to_string();
        assert!(e.ends_with("c.jsonl: rows 0..5 requested, the file has 2"), "{e}");
        let ex = load_rows(&TaskSpec::builtin("cruxeval-i").unwrap(), &p, Some([0, 1])).unwrap();
        assert_eq!(ex[0].prompt, "def f(x):\n    return x * 2\nassert 6 == f(");
        assert_eq!(ex[0].answer, "3)\n");
    }
}
