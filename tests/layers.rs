//! The crate's layers (docs/ARCHITECTURE.md): each module imports only from the layers below it,
//! so data flows one way (weights → model → soft prompt → wire → endpoint). Reads every source
//! file under src/ and checks each `crate::…` path against the table; inside a folder, its files
//! import each other without a circle (the folder's mod.rs is its front door: it declares and
//! re-exports its parts, which may use what it defines); and no source file outgrows one
//! concern.

use std::path::{Path, PathBuf};

/// The module a `crate::` path or a source file belongs to, as the layer table names it.
fn module_of(parts: &[&str]) -> String {
    match parts {
        [first, ..] => first.trim_end_matches(".rs").to_string(),
        [] => String::new(),
    }
}

/// Lower layers first; modules of one layer do not import each other, except where `allowed` says.
fn rank(module: &str) -> Option<usize> {
    Some(match module {
        "error" => 0,
        "fs" | "paths" | "rng" => 1,
        "device" => 2,
        "model" | "task" => 3,
        "adapter" | "wire" => 4,
        "client" => 5,
        "endpoint" | "training" | "web" => 6,
        "lib" => 7,
        _ => return None,
    })
}

fn allowed(from: &str, to: &str) -> bool {
    from == to || matches!((rank(from), rank(to)), (Some(a), Some(b)) if b < a)
}

/// Every `crate::a::b` path in a source text's code (comments and doc links are not imports).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = vec![];
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        out.push(path.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
    }
    out
}

/// `file: from → to` for every import that goes up or sideways.
fn violations(file: &str, from: &str, text: &str) -> Vec<String> {
    let mut out = vec![];
    for path in crate_paths(text) {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let to = module_of(&parts);
        if rank(&to).is_some() && !allowed(from, &to) {
            out.push(format!("{file}: {from} → {to} (crate::{})", path.join("::")));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_import_goes_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let mut bad = vec![];
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        let parts: Vec<&str> = rel.split('/').collect();
        if parts[0] == "cli" {
            continue; // the binary sits on top and may use everything
        }
        let from = module_of(&parts);
        assert!(rank(&from).is_some(), "{rel}: a module the layer table does not know; add it to tests/layers.rs and docs/ARCHITECTURE.md");
        bad.extend(violations(&rel, &from, &std::fs::read_to_string(f).unwrap()));
        checked += 1;
    }
    assert!(checked > 30, "only {checked} files found under {}", src.display());
    assert!(bad.is_empty(), "imports against the layers:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_an_import_that_goes_up() {
    assert_eq!(violations("model/x.rs", "model", "use crate::training::train;"), ["model/x.rs: model → training (crate::training::train)"]);
    assert_eq!(violations("endpoint/wire.rs", "endpoint::wire", "crate::client::Query").len(), 1);
    assert_eq!(violations("training/mod.rs", "training", "crate::endpoint::http::serve").len(), 1, "same layer, other module");
    assert!(violations("client/mod.rs", "client", "use crate::wire::Request; use crate::model::SoftPrompt;").is_empty());
    assert!(violations("model/x.rs", "model", "/// See [`crate::wire::WireSoftPrompt`].").is_empty(), "a doc link is not an import");
}

/// A source file's module path: `endpoint/backend.rs` → [endpoint, backend]; `endpoint/mod.rs` →
/// [endpoint]; `lib.rs` → [].
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The modules a file imports (`crate::`, `super::` and `self::` paths), each resolved to the
/// longest module path that exists.
fn imported_modules(path: &[String], text: &str, known: &std::collections::BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut out = vec![];
    for (prefix, base) in [("crate::", vec![]), ("super::", path[..path.len().saturating_sub(1)].to_vec()), ("self::", path.to_vec())] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // `a::super::` or `xcrate::`: not a path from here
            }
            let tail: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let mut full = base.clone();
            full.extend(tail.split("::").filter(|s| !s.is_empty()).map(str::to_string));
            while !full.is_empty() && !known.contains(&full) {
                full.pop();
            }
            out.push(full);
        }
    }
    out
}

/// Import edges between the files of one folder (neither of them the folder's mod.rs).
fn sibling_edges(files: &[(String, String)]) -> Vec<(Vec<String>, Vec<String>)> {
    let known: std::collections::BTreeSet<Vec<String>> = files.iter().map(|(rel, _)| module_path(rel)).collect();
    let mut edges = vec![];
    for (rel, text) in files {
        let from = module_path(rel);
        let is_root = rel.ends_with("mod.rs") || rel == "lib.rs";
        if is_root || from.is_empty() {
            continue;
        }
        for to in imported_modules(&from, text, &known) {
            let siblings = to.len() == from.len() && to[..to.len() - 1] == from[..from.len() - 1] && to != from;
            if siblings && !edges.contains(&(from.clone(), to.clone())) {
                edges.push((from.clone(), to));
            }
        }
    }
    edges
}

/// One circle in a directed graph, if there is any.
fn find_circle(edges: &[(Vec<String>, Vec<String>)]) -> Option<Vec<String>> {
    fn visit(n: &Vec<String>, edges: &[(Vec<String>, Vec<String>)], stack: &mut Vec<Vec<String>>, done: &mut Vec<Vec<String>>) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            return Some(stack[i..].iter().chain([n]).map(|p| p.join("::")).collect());
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for (_, to) in edges.iter().filter(|(f, _)| f == n) {
            if let Some(c) = visit(to, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.push(n.clone());
        None
    }
    let mut done = vec![];
    edges.iter().find_map(|(from, _)| visit(from, edges, &mut vec![], &mut done))
}

fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files.iter().map(|f| (f.strip_prefix(&src).unwrap().to_string_lossy().to_string(), std::fs::read_to_string(f).unwrap())).collect()
}

#[test]
fn the_files_of_a_folder_import_each_other_without_a_circle() {
    let edges = sibling_edges(&sources());
    assert!(edges.len() > 20, "only {} edges between sibling files found", edges.len());
    assert_eq!(find_circle(&edges), None, "an import circle");
}

#[test]
fn the_circle_finder_sees_a_circle_between_siblings() {
    let files = |a: &str, b: &str| vec![("endpoint/mod.rs".to_string(), "pub mod a; pub mod b; pub use a::X;".to_string()), ("endpoint/a.rs".to_string(), a.to_string()), ("endpoint/b.rs".to_string(), b.to_string())];
    let circle = find_circle(&sibling_edges(&files("use super::b::Y;", "use crate::endpoint::a::X;")));
    assert_eq!(circle, Some(vec!["endpoint::a".to_string(), "endpoint::b".into(), "endpoint::a".into()]));
    assert_eq!(find_circle(&sibling_edges(&files("use super::b::Y;", "use super::Z; // the folder's root is no sibling"))), None);
}

/// Longest source file allowed (the crate, the package, the demo, tests and scripts): past this,
/// a file holds more than one concern. The CruxEval literal parser is one concern, a grammar,
/// and longer.
const MAX_LINES: usize = 450;

#[test]
fn no_source_file_outgrows_one_concern() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = vec![];
    let mut files: Vec<(String, String)> = sources().into_iter().map(|(rel, text)| (format!("src/{rel}"), text)).collect();
    // Hand-written code only: pkg/wasm is generated, node_modules is not ours.
    for dir in ["pkg", "www", "tests", "tests/common", "tests/browser", "tests/bundlers", "tests/fixtures", "scripts", "scripts/lib"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() && p.extension().is_some_and(|x| ["js", "mjs", "ts", "rs", "py", "sh"].iter().any(|e| x == *e)) {
                files.push((p.strip_prefix(root).unwrap().to_string_lossy().to_string(), std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    for (rel, text) in &files {
        let n = text.lines().count();
        if n > MAX_LINES && rel != "src/training/judge/literal.rs" {
            long.push(format!("{rel}: {n} lines"));
        }
    }
    assert!(files.len() > 100, "only {} files found", files.len());
    assert!(long.is_empty(), "files over {MAX_LINES} lines:\n{}", long.join("\n"));
}
