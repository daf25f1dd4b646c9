//! `hubcast-ts-gen` reads Hubcast's protobuf definitions and generates the TypeScript client
//! package from them, so browser clients, the Rust SDK and the server share one source of
//! truth (`proto/hubcast/v1/*.proto`).
//!
//! The pipeline is: [`load`] compiles the `.proto` files with protox (pure Rust, no system
//! `protoc`) into a descriptor pool that keeps the source comments and custom options;
//! [`model::Model::build`] turns it into a small intermediate model (messages, fields, oneofs,
//! enums, services, their doc comments and their JSON mapping); [`generate`] renders the
//! model as the files of the TypeScript package.
//!
//! What is generated and what is written by hand: the message types, enums, the protobuf
//! binary codec and the JSON codec of every message (`src/protocol.ts`) come from the protos.
//! The runtime parts (protobuf reader/writer, the `HubcastClient` connection loop with
//! reconnect, recovery and acks) are TypeScript templates under `sdk-ts-gen/templates/`,
//! compiled into this crate and copied into the package, written against the generated types
//! so that a field added to a proto reaches the client's API without touching TypeScript.
//!
//! # Layout
//!
//! - [`load`], [`load_files`]: proto files → `prost_reflect::DescriptorPool`.
//! - [`model`]: descriptor pool → [`model::Model`].
//! - [`emit`]: [`model::Model`] → [`OutputFile`]s ([`generate`]).
//!
//! # Examples
//!
//! ```no_run
//! use std::path::Path;
//!
//! let pool = hubcast_ts_gen::load(Path::new("proto"))?;
//! let model = hubcast_ts_gen::model::Model::build(&pool);
//! for file in hubcast_ts_gen::generate(&model, &hubcast_ts_gen::Options::default())? {
//!     println!("{} ({} bytes)", file.path, file.contents.len());
//! }
//! # Ok::<(), hubcast_ts_gen::Error>(())
//! ```

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use prost_reflect::DescriptorPool;

pub mod emit;
pub mod model;

pub use emit::{Options, OutputFile, generate};

/// The directory, relative to the proto root, that holds the `hubcast.v1` files.
pub const PACKAGE_DIR: &str = "hubcast/v1";

/// An error loading the protobuf definitions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The package directory could not be listed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The directory that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The package directory holds no `.proto` file.
    #[error("no .proto file in {}", .0.display())]
    NoProtos(PathBuf),
    /// protox failed to parse or link the files.
    #[error("cannot compile the proto files")]
    Compile(#[from] protox::Error),
    /// The model cannot be rendered.
    #[error(transparent)]
    Generate(#[from] emit::GenError),
}

/// Compiles every `hubcast/v1/*.proto` file under `proto_root` (which is also the include
/// root) into a descriptor pool, with imports, source info (comments) and custom options.
///
/// Files are compiled in name order, which keeps the output deterministic.
///
/// # Errors
///
/// [`Error::Io`] if `proto_root/hubcast/v1` cannot be listed, [`Error::NoProtos`] if it holds
/// no `.proto` file, [`Error::Compile`] if the files do not parse or link.
pub fn load(proto_root: &Path) -> Result<DescriptorPool, Error> {
    let dir = proto_root.join(PACKAGE_DIR);
    let io_err = |source| Error::Io {
        path: dir.clone(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).map_err(io_err)? {
        let name = entry.map_err(io_err)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".proto") {
            // protox wants paths relative to an include root.
            files.push(format!("{PACKAGE_DIR}/{name}"));
        }
    }
    if files.is_empty() {
        return Err(Error::NoProtos(dir));
    }
    files.sort();
    load_files(&[proto_root], &files)
}

/// Compiles `files` (paths relative to one of `includes`) into a descriptor pool, with
/// imports, source info and custom options.
///
/// # Errors
///
/// [`Error::Compile`] if the files cannot be found, parsed or linked.
pub fn load_files<P: AsRef<Path>>(
    includes: &[P],
    files: &[String],
) -> Result<DescriptorPool, Error> {
    let mut compiler = protox::Compiler::new(includes)?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(files)?;
    Ok(compiler.descriptor_pool())
}

/// Writes `files` under `package_dir`, creating directories, and removes `.ts` files under
/// `package_dir/src` that the generator no longer produces.
///
/// # Errors
///
/// Any I/O error, with the path it concerns.
pub fn write_package(package_dir: &Path, files: &[OutputFile]) -> Result<(), Error> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    for file in files {
        let path = package_dir.join(&file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::write(&path, &file.contents).map_err(io_err(&path))?;
    }
    for stale in extra_sources(package_dir, files)? {
        let path = package_dir.join(&stale);
        fs::remove_file(&path).map_err(io_err(&path))?;
    }
    Ok(())
}

/// The generated files that differ from (or are missing in) `package_dir`, and the `.ts`
/// files under `package_dir/src` that the generator does not produce. Empty means the
/// checked-in package is up to date.
///
/// # Errors
///
/// An I/O error other than a missing file.
pub fn stale_files(package_dir: &Path, files: &[OutputFile]) -> Result<Vec<String>, Error> {
    let mut stale = Vec::new();
    for file in files {
        let path = package_dir.join(&file.path);
        match fs::read_to_string(&path) {
            Ok(text) if text == file.contents => {}
            Ok(_) => stale.push(file.path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => stale.push(file.path.clone()),
            Err(source) => return Err(Error::Io { path, source }),
        }
    }
    stale.extend(extra_sources(package_dir, files)?);
    Ok(stale)
}

/// `src/*.ts` files of the package that are not among `files`.
fn extra_sources(package_dir: &Path, files: &[OutputFile]) -> Result<Vec<String>, Error> {
    let dir = package_dir.join("src");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { path: dir, source }),
    };
    let mut extra = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let rel = format!("src/{name}");
        if name.ends_with(".ts") && !files.iter().any(|f| f.path == rel) {
            extra.push(rel);
        }
    }
    extra.sort();
    Ok(extra)
}
