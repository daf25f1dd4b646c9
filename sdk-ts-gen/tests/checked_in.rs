//! The checked-in TypeScript package (`sdk-ts/`) is exactly what the generator makes of
//! `proto/` today: regenerate in memory and compare every file (and no `src/*.ts` file may be
//! left over). The compiled `sdk-ts/dist/` is checked against `src/` by
//! `sdk-ts/test/build.test.mjs`.

use std::path::Path;

use hubcast_ts_gen::model::Model;
use hubcast_ts_gen::{Options, generate, load, stale_files, write_package};

#[test]
fn sdk_ts_is_up_to_date_with_the_protos() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pool = load(&root.join("proto")).expect("the repo's protos compile");
    let files =
        generate(&Model::build(&pool), &Options::default()).expect("the repo's protos render");
    let stale = stale_files(&root.join("sdk-ts"), &files).expect("sdk-ts is readable");
    assert!(
        stale.is_empty(),
        "sdk-ts/ is stale: {stale:?}\nregenerate with `cargo run -p hubcast-ts-gen -- --out sdk-ts`, \
         then `npm run build` in sdk-ts, and commit both"
    );
}

#[test]
fn a_fresh_generation_into_an_empty_directory_is_complete() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let pool = load(&root.join("proto")).expect("compiles");
    let files = generate(&Model::build(&pool), &Options::default()).expect("renders");
    let out = std::env::temp_dir().join(format!("hubcast-ts-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    write_package(&out, &files).expect("writes");
    // A stray source file is reported, then removed by the next write.
    std::fs::write(out.join("src/stray.ts"), "export {};\n").expect("write stray");
    assert_eq!(stale_files(&out, &files).expect("reads"), ["src/stray.ts"]);
    write_package(&out, &files).expect("writes again");
    assert!(stale_files(&out, &files).expect("reads").is_empty());
    for name in [
        "src/protocol.ts",
        "src/wire.ts",
        "src/client.ts",
        "src/index.ts",
        "README.md",
    ] {
        assert!(out.join(name).is_file(), "{name} written");
    }
    std::fs::remove_dir_all(&out).expect("clean up");
}
