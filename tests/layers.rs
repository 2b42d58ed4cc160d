//! The crate's layers (docs/ARCHITECTURE.md): each module imports only from the layers below it,
//! so data flows one way (weights → model → soft prompt → wire → endpoint). Reads every source
//! file under src/ and checks each `crate::…` path against the table.

use std::path::{Path, PathBuf};

/// The module a `crate::` path or a source file belongs to, as the layer table names it.
fn module_of(parts: &[&str]) -> String {
    match parts {
        ["endpoint", "wire", ..] => "endpoint::wire".into(),
        [first, ..] => first.trim_end_matches(".rs").to_string(),
        [] => String::new(),
    }
}

/// Lower layers first; modules of one layer do not import each other, except where `allowed` says.
fn rank(module: &str) -> Option<usize> {
    Some(match module {
        "error" => 0,
        "paths" | "rng" => 1,
        "device" => 2,
        "model" => 3,
        "adapter" => 4,
        "client" | "endpoint::wire" => 5,
        "endpoint" | "training" => 6,
        "lib" => 7,
        _ => return None,
    })
}

fn allowed(from: &str, to: &str) -> bool {
    from == to || (from == "client" && to == "endpoint::wire") || matches!((rank(from), rank(to)), (Some(a), Some(b)) if b < a)
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
