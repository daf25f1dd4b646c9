pub(crate) mod grpc;
pub(crate) mod rest;
pub(crate) mod ws;
