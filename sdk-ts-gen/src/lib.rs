//! `hubcast-ts-gen` reads Hubcast's protobuf definitions and generates the TypeScript client
//! package from them, so browser clients, the Rust SDK and the server share one source of
//! truth (`proto/hubcast/v1/*.proto`).
//!
//! The pipeline is: [`load`] compiles the `.proto` files with protox (pure Rust, no system
//! `protoc`) into a `FileDescriptorSet` that keeps the source comments; [`model::Model::build`]
//! turns it into a small intermediate model (messages, fields, oneofs, enums, services and
//! their doc comments); emitters (added by later work) render the model as TypeScript.
//!
//! # Layout
//!
//! - [`load`]: proto files → `FileDescriptorSet`.
//! - [`model`]: `FileDescriptorSet` → [`model::Model`].
//!
//! # Examples
//!
//! ```no_run
//! use std::path::Path;
//!
//! let fds = hubcast_ts_gen::load(Path::new("proto"))?;
//! let model = hubcast_ts_gen::model::Model::build(&fds);
//! println!("{} messages", model.messages.len());
//! # Ok::<(), hubcast_ts_gen::Error>(())
//! ```

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use prost_types::FileDescriptorSet;

pub mod model;

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
}

/// Compiles every `hubcast/v1/*.proto` file under `proto_root` (which is also the include
/// root) into a `FileDescriptorSet`, with imports and source info, so comments are kept.
///
/// Files are compiled in name order, which keeps the output deterministic.
///
/// # Errors
///
/// [`Error::Io`] if `proto_root/hubcast/v1` cannot be listed, [`Error::NoProtos`] if it holds
/// no `.proto` file, [`Error::Compile`] if the files do not parse or link.
pub fn load(proto_root: &Path) -> Result<FileDescriptorSet, Error> {
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
    let fds = protox::Compiler::new([proto_root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(files)?
        .file_descriptor_set();
    Ok(fds)
}
