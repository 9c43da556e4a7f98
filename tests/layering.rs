//! The crate's layering rule (the crate docs): no module of `src/` names a module above it, and
//! every module has a place in the rule.
//!
//! ```text
//! linalg, data, io  ←  layers  ←  optim, integrators  ←  models  ←  train, checkpoint, config
//!                   ←  problems, bench  ←  cli
//! ```
//!
//! A module is the first path component under `src/`; every `crate::NAME` a file names outside
//! comments (in `use` lines, `use crate::{…}` groups or inline paths) is an arrow to NAME.

use std::collections::BTreeSet;
use std::path::Path;

/// Each module's place in the layering: a module may import only modules of a lower place.
/// Within a layer the order says which way the one allowed arrow points (`data` reads files
/// through `io`, `integrators` step with `optim`, `train` writes `checkpoint`s of `config`s).
const ORDER: [(&str, u32); 16] = [
    ("error", 0),
    ("linalg", 10),
    ("io", 11),
    ("data", 12),
    ("layers", 20),
    ("optim", 30),
    ("integrators", 31),
    ("models", 40),
    ("config", 50),
    ("checkpoint", 51),
    ("train", 52),
    ("problems", 60),
    ("bench", 61),
    ("cli", 70),
    ("lib", 100),
    ("main", 100),
];

/// Arrows that [`ORDER`] allows but the rule does not: the maths and the models take tensors
/// whatever their source (no data sets), and configs name no model code.
const NEVER: [(&str, &str); 4] =
    [("optim", "data"), ("integrators", "data"), ("models", "data"), ("config", "models")];

fn place(module: &str) -> Option<u32> {
    ORDER.iter().find(|(m, _)| *m == module).map(|&(_, p)| p)
}

/// Whether `module` may import `name` (names that are not modules, like `Result`, always).
fn allowed(module: &str, name: &str) -> bool {
    match (place(module), place(name)) {
        (Some(me), Some(it)) => (it < me || name == module) && !NEVER.contains(&(module, name)),
        _ => true,
    }
}

/// The text of `source` with `//` comments and `/* */` blocks removed (lines kept).
fn code(source: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in source.lines() {
        let mut rest = line;
        let mut kept = String::new();
        loop {
            if in_block {
                match rest.find("*/") {
                    Some(end) => (in_block, rest) = (false, &rest[end + 2..]),
                    None => break,
                }
            } else {
                match (rest.find("//"), rest.find("/*")) {
                    (Some(c), Some(b)) if b < c => {
                        kept.push_str(&rest[..b]);
                        (in_block, rest) = (true, &rest[b + 2..]);
                    }
                    (Some(c), _) => {
                        kept.push_str(&rest[..c]);
                        break;
                    }
                    (None, Some(b)) => {
                        kept.push_str(&rest[..b]);
                        (in_block, rest) = (true, &rest[b + 2..]);
                    }
                    (None, None) => {
                        kept.push_str(rest);
                        break;
                    }
                }
            }
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The modules `code` names: `crate::NAME` and the first names of `use crate::{NAME, …}`.
fn imports(code: &str) -> BTreeSet<String> {
    let ident =
        |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            names.extend(group.split(',').map(|item| ident(item.trim())).filter(|n| !n.is_empty()));
        } else {
            names.insert(ident(rest));
        }
    }
    names
}

#[test]
fn no_module_imports_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs");
        assert!(
            place(module).is_some(),
            "src/{}: module {module} has no place in the layering",
            rel.display()
        );
        if path.extension().is_none_or(|e| e != "rs") || module == "lib" || module == "main" {
            continue;
        }
        let text = code(&std::fs::read_to_string(&path).unwrap());
        for name in imports(&text) {
            if !allowed(module, &name) {
                violations.push(format!("{}: {module} -> {name}", rel.display()));
            }
        }
    }
    violations.sort();
    assert!(violations.is_empty(), "imports against the layering rule:\n{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_paths_groups_and_skips_comments() {
    let text = code(
        "use crate::{models::Mlp, Result};\n// crate::train\nlet x = crate::cli::run(); /* crate::bench */",
    );
    assert_eq!(imports(&text), ["Result", "cli", "models"].map(String::from).into_iter().collect());
    assert!(!allowed("models", "train") && !allowed("layers", "optim") && !allowed("models", "data"));
    assert!(allowed("integrators", "optim") && allowed("data", "io") && allowed("train", "checkpoint"));
    assert!(!allowed("config", "models") && !allowed("optim", "integrators") && allowed("cli", "Result"));
}
