//! The layout guard: which modules of the server may import which. The rules are the
//! structure in `server/src/lib.rs` ("Layout") made checkable, so an import that points the
//! wrong way fails here, in review, rather than turning into a cycle later.
//!
//! Each rule names a module (its file and its folder) and the `crate::` paths its code may
//! not name, in `use` lines or inline. Comments are not code: a doc comment may still point
//! at a forbidden module. The router may use plain configuration only as values passed in
//! (`RouterConfig`), never `crate::config`, so it stays free of the file/env/flag layer.
//! To add a rule, add a row to [`RULES`].

use std::path::{Path, PathBuf};

/// (module, why, the paths (`crate::` prefixes) or type names its code may not name).
const RULES: &[(&str, &str, &[&str])] = &[
    (
        "router",
        "the core knows no backplane, edge, service layer, upstream or configuration layer",
        &[
            "crate::cluster",
            "crate::edge",
            "crate::node",
            "crate::upstream",
            "crate::config",
            "crate::server",
        ],
    ),
    (
        "edge",
        "an edge calls the service layer: it never reaches the composition root, the backplane \
         or the router itself (registrations, joins and sends go through `Node`)",
        &["crate::server", "crate::cluster", "Router"],
    ),
    (
        "protocol",
        "the codecs sit below the router: router -> protocol -> message, never back",
        &["crate::router"],
    ),
    (
        "message",
        "the message model sits below both the router and the codecs",
        &["crate::router", "crate::protocol"],
    ),
];

/// The files of `module`: `src/{module}.rs` and everything under `src/{module}/`.
fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
    let mut files = vec![src.join(format!("{module}.rs"))];
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable source folder").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.retain(|f| f.exists());
    files.sort();
    files
}

/// Whether `line` names `prefix` as a path (`crate::cluster` but not `crate::clusters`).
fn names(line: &str, prefix: &str) -> bool {
    line.match_indices(prefix).any(|(at, _)| {
        !line[at + prefix.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[test]
fn modules_import_only_what_their_place_in_the_layout_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (module, why, forbidden) in RULES {
        let files = files_of(&src, module);
        assert!(!files.is_empty(), "no source files for module `{module}`");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for prefix in forbidden.iter().filter(|p| names(code, p)) {
                    broken.push(format!(
                        "{}:{}: names {prefix} ({why})",
                        file.strip_prefix(&src).unwrap_or(&file).display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layout:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_guard_sees_an_import_and_ignores_a_comment() {
    assert!(names("use crate::cluster::Cluster;", "crate::cluster"));
    assert!(names(
        "    crate::cluster::wire::Body::Op(op)",
        "crate::cluster"
    ));
    assert!(!names("use crate::clusters;", "crate::cluster"));
    let commented = "/// see [`Cluster`](crate::cluster::Cluster)";
    assert!(!names(
        commented.split("//").next().unwrap_or_default(),
        "crate::cluster"
    ));
}
