//! `hubcast-ts-gen [PROTO_ROOT]`: loads `PROTO_ROOT/hubcast/v1/*.proto` (default: `proto`)
//! and prints a summary of the model the TypeScript emitter will render.

use std::{error::Error, path::PathBuf, process::ExitCode};

use hubcast_ts_gen::model::{Cardinality, FieldType, Model};

fn main() -> ExitCode {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("proto"), PathBuf::from);
    match hubcast_ts_gen::load(&root) {
        Ok(fds) => {
            print_summary(&Model::build(&fds));
            ExitCode::SUCCESS
        }
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
