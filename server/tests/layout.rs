//! The module layout's import rules, checked on the source: the fan-out path points one way
//! (router → protocol → message), so the codecs and the message model never import the
//! router, and the model never imports the codecs. A new rule is a row of [`RULES`].

use std::path::{Path, PathBuf};

/// (module, forbidden import prefixes): the module is `src/<module>.rs` and every file
/// under `src/<module>/`.
const RULES: &[(&str, &[&str])] = &[
    ("protocol", &["crate::router"]),
    ("message", &["crate::router", "crate::protocol"]),
];

/// The files of `module`: its root file and everything under its folder.
fn module_files(src: &Path, module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let root = src.join(format!("{module}.rs"));
    if root.exists() {
        files.push(root);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable directory").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn the_codecs_and_the_message_model_do_not_import_the_layers_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for (module, forbidden) in RULES {
        let files = module_files(&src, module);
        assert!(!files.is_empty(), "module {module} has no files");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for (n, line) in text.lines().enumerate() {
                // Doc links name other modules without depending on them.
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for prefix in *forbidden {
                    if line.contains(prefix) {
                        broken.push(format!(
                            "{}:{}: {module} must not use {prefix}: {}",
                            file.strip_prefix(&src).unwrap_or(&file).display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layout rules broken:\n{}",
        broken.join("\n")
    );
}
