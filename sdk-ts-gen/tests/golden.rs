//! Golden-file tests of the emitter: `tests/golden/example.proto` (every construct the
//! emitter handles) renders to exactly `tests/golden/example/protocol.ts`, and inconsistent
//! JSON options are refused.
//!
//! After an intended change to the output, regenerate the golden file with
//! `UPDATE_GOLDEN=1 cargo test -p hubcast-ts-gen --test golden` and review the diff.

use std::path::{Path, PathBuf};

use hubcast_ts_gen::emit::GenError;
use hubcast_ts_gen::model::Model;
use hubcast_ts_gen::{Options, OutputFile, generate, load_files};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Generates the protocol file of `proto` (in `tests/golden`, which may import the repo's
/// `hubcast/v1/options.proto`).
fn generate_golden(proto: &str) -> Result<Vec<OutputFile>, GenError> {
    let includes = [
        dir(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto"),
    ];
    let pool = load_files(&includes, &[proto.to_owned()]).expect("the golden proto compiles");
    let model = Model::build(&pool);
    let options = Options {
        files: vec![proto.to_owned()],
        runtime: false,
    };
    generate(&model, &options)
}

#[test]
fn example_proto_renders_to_the_golden_file() {
    let files = generate_golden("example.proto").expect("example.proto renders");
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["src/protocol.ts", "src/wire.ts"],
        "no runtime without `runtime`"
    );
    let protocol = &files[0].contents;
    let golden = dir().join("example/protocol.ts");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&golden, protocol).expect("write the golden file");
    }
    let expected = std::fs::read_to_string(&golden).expect("the golden file exists");
    if *protocol != expected {
        let line = protocol
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| protocol.lines().count().min(expected.lines().count()));
        panic!(
            "generated output differs from {} at line {} (run with UPDATE_GOLDEN=1 to accept):\n  generated: {:?}\n  golden:    {:?}",
            golden.display(),
            line + 1,
            protocol.lines().nth(line),
            expected.lines().nth(line)
        );
    }
}

#[test]
fn generation_is_deterministic() {
    let a = generate_golden("example.proto").expect("renders");
    let b = generate_golden("example.proto").expect("renders");
    assert_eq!(a, b);
}

#[test]
fn the_golden_output_has_what_the_options_ask_for() {
    let files = generate_golden("example.proto").expect("renders");
    let ts = &files[0].contents;
    for expected in [
        // Numeric enum with the prefix stripped, string enum with its strings.
        "DarkBlue: 2,",
        "Second: \"second-one\",",
        // Discriminated oneof merged into the parent's JSON.
        "o.type = \"note\";",
        "Object.assign(o, Note.toJson(body.value));",
        // Renamed key, null for empty, inline child, JSON-only field.
        "o.body = m.text;",
        "o.owner = m.owner ? m.owner : null;",
        "if (m.payload !== undefined) Object.assign(o, Payload.toJson(m.payload));",
        "author?: string;",
        // value_key, raw JSON, base64 protobuf, default tag.
        "o.value = wire.parseJson(value.value);",
        "o.value = wire.base64Encode(wire.Any.encode(value.value).finish());",
        "switch (o.kind ?? (o.value !== undefined ? \"raw\" : undefined))",
        // String-enum typed field, packed repeated, int-keyed map.
        "category: Category | (string & {});",
        "w.tag(3, 2).packed(m.scores, (w, v) => w.int32(v));",
        "m.labels[String(k)] = v;",
        // A plain oneof keeps protobuf's mapping.
        "if (o.a != null) m.choice = { case: \"a\", value: wire.jsonString(o.a, \"a\") };",
    ] {
        assert!(ts.contains(expected), "missing {expected:?}");
    }
    // The unspecified value of a string enum has no string, so it is not emitted.
    assert!(!ts.contains("Unspecified: \""), "{ts}");
}

#[test]
fn a_member_of_a_discriminated_oneof_needs_a_tag() {
    let err = generate_golden("bad_missing_tag.proto").expect_err("must be refused");
    assert!(
        matches!(&err, GenError::JsonMapping { at, problem } if at == "bad.v1.Envelope.untagged" && problem.contains("tag")),
        "{err:?}"
    );
}

#[test]
fn two_fields_cannot_share_a_json_key() {
    let err = generate_golden("bad_key_clash.proto").expect_err("must be refused");
    assert!(err.to_string().contains("\"name\""), "{err}");
}
