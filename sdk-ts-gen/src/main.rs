//! `hubcast-ts-gen`: generates the TypeScript client package from the protos.
//!
//! ```text
//! hubcast-ts-gen [--proto DIR] --out DIR     write the package files (default proto: ./proto)
//! hubcast-ts-gen [--proto DIR] --check DIR   exit 1 if DIR differs from a fresh generation
//! hubcast-ts-gen [--proto DIR] --summary     print the model the emitter renders
//! ```
//!
//! From the repository root, `cargo run -p hubcast-ts-gen -- --out sdk-ts` regenerates the
//! checked-in package (then `npm run build` in `sdk-ts` rebuilds `dist/`).

use std::{error::Error, path::PathBuf, process::ExitCode};

use hubcast_ts_gen::model::{Cardinality, FieldType, Model};

const USAGE: &str = "usage: hubcast-ts-gen [--proto DIR] (--out DIR | --check DIR | --summary)";

enum Mode {
    Out(PathBuf),
    Check(PathBuf),
    Summary,
}

fn main() -> ExitCode {
    let mut proto = PathBuf::from("proto");
    let mut mode = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--proto") => match args.next() {
                Some(dir) => proto = dir.into(),
                None => return usage(),
            },
            Some("--out") => mode = args.next().map(|d| Mode::Out(d.into())),
            Some("--check") => mode = args.next().map(|d| Mode::Check(d.into())),
            Some("--summary") => mode = Some(Mode::Summary),
            _ => return usage(),
        }
    }
    let Some(mode) = mode else {
        return usage();
    };
    match run(&proto, mode) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hubcast-ts-gen: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

fn run(proto: &std::path::Path, mode: Mode) -> Result<ExitCode, hubcast_ts_gen::Error> {
    let pool = hubcast_ts_gen::load(proto)?;
    let model = Model::build(&pool);
    let files = || hubcast_ts_gen::generate(&model, &hubcast_ts_gen::Options::default());
    match mode {
        Mode::Summary => print_summary(&model),
        Mode::Out(dir) => {
            let files = files()?;
            hubcast_ts_gen::write_package(&dir, &files)?;
            for f in &files {
                println!("wrote {}", dir.join(&f.path).display());
            }
        }
        Mode::Check(dir) => {
            let stale = hubcast_ts_gen::stale_files(&dir, &files()?)?;
            if !stale.is_empty() {
                eprintln!(
                    "{} is stale; regenerate with `cargo run -p hubcast-ts-gen -- --out {}`:",
                    dir.display(),
                    dir.display()
                );
                for path in stale {
                    eprintln!("  {path}");
                }
                return Ok(ExitCode::FAILURE);
            }
            println!("{} is up to date", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(model: &Model) {
    println!(
        "{} services, {} messages, {} enums",
        model.services.len(),
        model.messages.len(),
        model.enums.len()
    );
    for service in &model.services {
        println!("\nservice {} ({})", service.full_name, service.file);
        for m in &service.methods {
            let stream = |yes: bool| if yes { "stream " } else { "" };
            println!(
                "  rpc {}({}{}) returns ({}{})",
                m.name,
                stream(m.client_streaming),
                m.input,
                stream(m.server_streaming),
                m.output
            );
        }
    }
    for message in &model.messages {
        println!("\nmessage {} ({})", message.full_name, message.file);
        for f in &message.fields {
            let oneof = f
                .oneof
                .as_ref()
                .map(|o| format!(" [oneof {o}]"))
                .unwrap_or_default();
            println!(
                "  {}{} {} = {}{oneof}",
                label(f.cardinality),
                type_name(&f.ty),
                f.name,
                f.number
            );
        }
    }
    for en in &model.enums {
        println!("\nenum {} ({})", en.full_name, en.file);
        for v in &en.values {
            println!("  {} = {}", v.name, v.number);
        }
    }
}

fn label(cardinality: Cardinality) -> &'static str {
    match cardinality {
        Cardinality::Singular => "",
        Cardinality::Optional => "optional ",
        Cardinality::Repeated => "repeated ",
    }
}

fn type_name(ty: &FieldType) -> String {
    match ty {
        FieldType::Scalar(s) => format!("{s:?}").to_lowercase(),
        FieldType::Message(name) | FieldType::Enum(name) => name.clone(),
        FieldType::Map { key, value } => format!("map<{}, {}>", type_name(key), type_name(value)),
    }
}
