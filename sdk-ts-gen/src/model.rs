//! The intermediate model the emitters render: messages, enums and services of the compiled
//! protos, flattened (nested types get their full dotted name) and with their leading
//! comments.
//!
//! Files of `google.*` packages (well-known types pulled in as imports) are not modelled;
//! fields refer to them by full name (`google.protobuf.Any`), and emitters map them.
//!
//! The model also carries the JSON mapping recorded by the custom options of
//! `hubcast/v1/options.proto` ([`JsonField`], [`JsonOneof`], [`JsonOnlyField`],
//! [`EnumValue::json_value`]); a declaration without options gets the defaults.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    SourceCodeInfo,
    field_descriptor_proto::{Label, Type},
};

// Field numbers of descriptor.proto, used in `SourceCodeInfo` location paths.
const FILE_MESSAGE_TYPE: i32 = 4;
const FILE_ENUM_TYPE: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED_TYPE: i32 = 3;
const MESSAGE_ENUM_TYPE: i32 = 4;
const MESSAGE_ONEOF_DECL: i32 = 8;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// Everything the emitters need to know about a set of proto files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Every message, nested ones included (map-entry messages excluded), in declaration
    /// order, parents before their nested messages.
    pub messages: Vec<Message>,
    /// Every enum, nested ones included, in declaration order.
    pub enums: Vec<Enum>,
    /// Every service, in declaration order.
    pub services: Vec<Service>,
}

/// A protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Dotted full name without the leading dot, e.g. `hubcast.v1.UpstreamMessage.PingMessage`.
    pub full_name: String,
    /// The simple name, e.g. `PingMessage`.
    pub name: String,
    /// The package, e.g. `hubcast.v1` (empty for a file without one).
    pub package: String,
    /// The proto file that declares it, e.g. `hubcast/v1/client.proto`.
    pub file: String,
    /// The leading comment, without comment markers; empty if none.
    pub comments: String,
    /// Fields in declaration order (oneof members included; see [`Field::oneof`]).
    pub fields: Vec<Field>,
    /// Real oneofs (not the synthetic ones proto3 `optional` creates), in declaration order.
    pub oneofs: Vec<Oneof>,
    /// Keys only the JSON form of the message carries (`(hubcast.v1.json_message)`).
    pub json_extra_fields: Vec<JsonOnlyField>,
}

/// A field of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The proto field name (snake case), e.g. `ack_id`.
    pub name: String,
    /// The JSON name protoc derives (lower camel case), e.g. `ackId`.
    pub json_name: String,
    /// The field number.
    pub number: i32,
    /// The value type.
    pub ty: FieldType,
    /// Whether the field repeats or has explicit presence. Map fields are
    /// [`Cardinality::Singular`] with a [`FieldType::Map`] type.
    pub cardinality: Cardinality,
    /// The name of the (real) oneof this field belongs to, if any.
    pub oneof: Option<String>,
    /// The leading comment; empty if none.
    pub comments: String,
    /// The JSON mapping (`(hubcast.v1.json)`).
    pub json: JsonField,
}

/// How a field appears in the JSON subprotocols: the `(hubcast.v1.json)` option.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonField {
    /// The JSON key, if not [`Field::json_name`].
    pub name: Option<String>,
    /// A message field whose keys are merged into the parent object.
    pub inline: bool,
    /// The discriminator value that selects this oneof member.
    pub tag: Option<String>,
    /// The empty string is written as `null`.
    pub null_if_empty: bool,
    /// How the value is written.
    pub encoding: JsonEncoding,
    /// Full name of the string-valued enum whose values the (string) field carries.
    pub string_enum: Option<String>,
}

/// Non-default JSON encodings of a value (`hubcast.v1.JsonEncoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JsonEncoding {
    /// The default for the type.
    #[default]
    Default,
    /// A string holding a JSON document, embedded as the document itself.
    RawJson,
    /// A message written as the base64 of its protobuf encoding.
    Base64Protobuf,
}

/// How a oneof appears in the JSON subprotocols: the `(hubcast.v1.json_oneof)` option.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonOneof {
    /// The key naming the member that is set; `None` means protobuf's mapping.
    pub discriminator: Option<String>,
    /// The key holding a non-message member's value.
    pub value_key: Option<String>,
    /// The tag assumed when the discriminator is absent.
    pub default_tag: Option<String>,
}

/// A string key that only the JSON form of a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonOnlyField {
    /// The JSON key, which is also the generated property name.
    pub name: String,
    /// Documentation.
    pub doc: String,
    /// The value may be `null`.
    pub nullable: bool,
}

/// How many values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    /// One value; absent means the default (or, for messages and oneof members, unset).
    Singular,
    /// proto3 `optional`: one value with explicit presence.
    Optional,
    /// `repeated`: zero or more values.
    Repeated,
}

/// The type of a field's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A scalar type.
    Scalar(Scalar),
    /// A message, by full name without the leading dot.
    Message(String),
    /// An enum, by full name without the leading dot.
    Enum(String),
    /// A `map<key, value>`.
    Map {
        /// The key type (always a scalar in valid protobuf).
        key: Box<FieldType>,
        /// The value type.
        value: Box<FieldType>,
    },
}

/// A protobuf scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // The variants are protobuf's type names.
pub enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
}

/// A oneof of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oneof {
    /// The oneof name, e.g. `message`.
    pub name: String,
    /// The leading comment; empty if none.
    pub comments: String,
    /// Names of its member fields, in declaration order.
    pub fields: Vec<String>,
    /// The JSON mapping (`(hubcast.v1.json_oneof)`).
    pub json: JsonOneof,
}

/// A protobuf enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    /// Dotted full name without the leading dot.
    pub full_name: String,
    /// The simple name.
    pub name: String,
    /// The package (empty for a file without one).
    pub package: String,
    /// The proto file that declares it.
    pub file: String,
    /// The leading comment; empty if none.
    pub comments: String,
    /// The values, in declaration order.
    pub values: Vec<EnumValue>,
}

/// A value of an enum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumValue {
    /// The value name, e.g. `SYSTEM_EVENT_KIND_CONNECT`.
    pub name: String,
    /// The number.
    pub number: i32,
    /// The leading comment; empty if none.
    pub comments: String,
    /// The string written for this value where a string field carries it
    /// (`(hubcast.v1.json_value)`).
    pub json_value: Option<String>,
}

/// A gRPC service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Dotted full name, e.g. `hubcast.v1.Control`.
    pub full_name: String,
    /// The simple name, e.g. `Control`.
    pub name: String,
    /// The proto file that declares it.
    pub file: String,
    /// The leading comment; empty if none.
    pub comments: String,
    /// The RPCs, in declaration order.
    pub methods: Vec<Method>,
}

/// An RPC of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// The method name, e.g. `SendToGroup`.
    pub name: String,
    /// Full name of the request message.
    pub input: String,
    /// Full name of the response message.
    pub output: String,
    /// The client sends a stream of requests.
    pub client_streaming: bool,
    /// The server replies with a stream of responses.
    pub server_streaming: bool,
    /// The leading comment; empty if none.
    pub comments: String,
}

// === impl Model ===

impl Model {
    /// Builds the model of every non-`google.*` file in `pool`, with the JSON mapping
    /// options of `hubcast/v1/options.proto` where the pool has that file.
    ///
    /// References that cannot be resolved (a map field whose entry message is missing) are
    /// kept as plain message references; a pool built by protox is always complete.
    pub fn build(pool: &DescriptorPool) -> Self {
        let mut model = Self::default();
        let files: Vec<FileDescriptorProto> = pool
            .files()
            .map(|f| f.file_descriptor_proto().clone())
            .collect();
        // Map-entry messages of every file, so map fields can be resolved to key/value types.
        let mut map_entries = HashMap::new();
        for file in &files {
            let prefix = package_prefix(file);
            for msg in &file.message_type {
                collect_map_entries(&prefix, msg, &mut map_entries);
            }
        }
        let options = JsonOptions::new(pool);
        for file in files.iter().filter(|f| !f.package().starts_with("google.")) {
            FileBuilder {
                file,
                comments: comments_by_path(file.source_code_info.as_ref()),
                map_entries: &map_entries,
                options: &options,
                model: &mut model,
            }
            .build();
        }
        model
    }

    /// The message with this full name (without leading dot), if modelled.
    pub fn message(&self, full_name: &str) -> Option<&Message> {
        self.messages.iter().find(|m| m.full_name == full_name)
    }

    /// The enum with this full name (without leading dot), if modelled.
    pub fn enum_(&self, full_name: &str) -> Option<&Enum> {
        self.enums.iter().find(|e| e.full_name == full_name)
    }

    /// The service with this full name, if modelled.
    pub fn service(&self, full_name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.full_name == full_name)
    }
}

// === impl Message ===

impl Message {
    /// The field with this proto name, if any.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The oneof with this name, if any.
    pub fn oneof(&self, name: &str) -> Option<&Oneof> {
        self.oneofs.iter().find(|o| o.name == name)
    }
}

/// `"pkg."`, or `""` for a file without a package.
fn package_prefix(file: &FileDescriptorProto) -> String {
    match file.package() {
        "" => String::new(),
        pkg => format!("{pkg}."),
    }
}

/// Records the key and value fields of every map-entry message under `prefix`.
fn collect_map_entries(
    prefix: &str,
    msg: &DescriptorProto,
    out: &mut HashMap<String, (FieldDescriptorProto, FieldDescriptorProto)>,
) {
    let full_name = format!("{prefix}{}", msg.name());
    if msg.options.as_ref().is_some_and(|o| o.map_entry())
        && let [key, value] = msg.field.as_slice()
    {
        out.insert(full_name.clone(), (key.clone(), value.clone()));
    }
    let nested_prefix = format!("{full_name}.");
    for nested in &msg.nested_type {
        collect_map_entries(&nested_prefix, nested, out);
    }
}

/// Leading comments of a file, keyed by their `SourceCodeInfo` location path.
fn comments_by_path(info: Option<&SourceCodeInfo>) -> HashMap<Vec<i32>, String> {
    let Some(info) = info else {
        return HashMap::new();
    };
    info.location
        .iter()
        .filter_map(|loc| {
            let text = clean_comment(loc.leading_comments.as_deref()?);
            (!text.is_empty()).then(|| (loc.path.clone(), text))
        })
        .collect()
}

/// Removes the single space after each `//` that protoc keeps, and surrounding blank lines.
fn clean_comment(raw: &str) -> String {
    let lines: Vec<&str> = raw
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect();
    lines.join("\n").trim().to_owned()
}

/// Strips the leading dot of a fully qualified type reference.
fn type_ref(type_name: &str) -> String {
    type_name.trim_start_matches('.').to_owned()
}

/// The extensions of `hubcast/v1/options.proto`, looked up once; `None` where the pool does
/// not have that file (then every declaration gets the default mapping).
struct JsonOptions<'a> {
    pool: &'a DescriptorPool,
    field: Option<ExtensionDescriptor>,
    oneof: Option<ExtensionDescriptor>,
    message: Option<ExtensionDescriptor>,
    enum_value: Option<ExtensionDescriptor>,
}

impl<'a> JsonOptions<'a> {
    fn new(pool: &'a DescriptorPool) -> Self {
        Self {
            pool,
            field: pool.get_extension_by_name("hubcast.v1.json"),
            oneof: pool.get_extension_by_name("hubcast.v1.json_oneof"),
            message: pool.get_extension_by_name("hubcast.v1.json_message"),
            enum_value: pool.get_extension_by_name("hubcast.v1.json_value"),
        }
    }

    fn field(&self, message: &str, field: &str) -> JsonField {
        let Some(opts) = self
            .pool
            .get_message_by_name(message)
            .and_then(|m| m.get_field_by_name(field))
            .and_then(|f| extension(&f.options(), self.field.as_ref()))
        else {
            return JsonField::default();
        };
        let Some(opts) = opts.as_message() else {
            return JsonField::default();
        };
        let encoding = match opts
            .get_field_by_name("encoding")
            .and_then(|v| v.as_enum_number())
        {
            Some(1) => JsonEncoding::RawJson,
            Some(2) => JsonEncoding::Base64Protobuf,
            _ => JsonEncoding::Default,
        };
        JsonField {
            name: string_field(opts, "name"),
            inline: bool_field(opts, "inline"),
            tag: string_field(opts, "tag"),
            null_if_empty: bool_field(opts, "null_if_empty"),
            encoding,
            string_enum: string_field(opts, "string_enum"),
        }
    }

    fn oneof(&self, message: &str, oneof: &str) -> JsonOneof {
        let Some(opts) = self
            .pool
            .get_message_by_name(message)
            .and_then(|m| m.oneofs().find(|o| o.name() == oneof))
            .and_then(|o| extension(&o.options(), self.oneof.as_ref()))
        else {
            return JsonOneof::default();
        };
        let Some(opts) = opts.as_message() else {
            return JsonOneof::default();
        };
        JsonOneof {
            discriminator: string_field(opts, "discriminator"),
            value_key: string_field(opts, "value_key"),
            default_tag: string_field(opts, "default_tag"),
        }
    }

    fn extra_fields(&self, message: &str) -> Vec<JsonOnlyField> {
        let Some(opts) = self
            .pool
            .get_message_by_name(message)
            .and_then(|m| extension(&m.options(), self.message.as_ref()))
        else {
            return Vec::new();
        };
        let Some(list) = opts
            .as_message()
            .and_then(|o| o.get_field_by_name("extra_fields"))
            .and_then(|l| l.as_list().map(<[_]>::to_vec))
        else {
            return Vec::new();
        };
        list.iter()
            .filter_map(|v| v.as_message())
            .map(|f| JsonOnlyField {
                name: string_field(f, "name").unwrap_or_default(),
                doc: string_field(f, "doc").unwrap_or_default(),
                nullable: bool_field(f, "nullable"),
            })
            .collect()
    }

    fn enum_value(&self, en: &str, value: &str) -> Option<String> {
        let value = self
            .pool
            .get_enum_by_name(en)?
            .values()
            .find(|v| v.name() == value)?;
        let opts = extension(&value.options(), self.enum_value.as_ref())?;
        opts.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
    }
}

/// The value of extension `ext` in `options`, if set.
fn extension(
    options: &DynamicMessage,
    ext: Option<&ExtensionDescriptor>,
) -> Option<prost_reflect::Value> {
    let ext = ext?;
    options
        .has_extension(ext)
        .then(|| options.get_extension(ext).into_owned())
}

/// A non-empty string field of an options message.
fn string_field(m: &DynamicMessage, name: &str) -> Option<String> {
    m.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty())
}

/// A bool field of an options message.
fn bool_field(m: &DynamicMessage, name: &str) -> bool {
    m.get_field_by_name(name)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// Walks one file, appending its declarations to the model.
struct FileBuilder<'a> {
    file: &'a FileDescriptorProto,
    comments: HashMap<Vec<i32>, String>,
    map_entries: &'a HashMap<String, (FieldDescriptorProto, FieldDescriptorProto)>,
    options: &'a JsonOptions<'a>,
    model: &'a mut Model,
}

impl FileBuilder<'_> {
    fn build(mut self) {
        let prefix = package_prefix(self.file);
        for (i, msg) in self.file.message_type.iter().enumerate() {
            self.message(&prefix, msg, vec![FILE_MESSAGE_TYPE, index(i)]);
        }
        for (i, en) in self.file.enum_type.iter().enumerate() {
            self.enumeration(&prefix, en, vec![FILE_ENUM_TYPE, index(i)]);
        }
        for (i, svc) in self.file.service.iter().enumerate() {
            let path = vec![FILE_SERVICE, index(i)];
            let methods = svc
                .method
                .iter()
                .enumerate()
                .map(|(j, m)| Method {
                    name: m.name().to_owned(),
                    input: type_ref(m.input_type()),
                    output: type_ref(m.output_type()),
                    client_streaming: m.client_streaming(),
                    server_streaming: m.server_streaming(),
                    comments: self.comment(&child(&path, SERVICE_METHOD, j)),
                })
                .collect();
            self.model.services.push(Service {
                full_name: format!("{prefix}{}", svc.name()),
                name: svc.name().to_owned(),
                file: self.file.name().to_owned(),
                comments: self.comment(&path),
                methods,
            });
        }
    }

    fn comment(&self, path: &[i32]) -> String {
        self.comments.get(path).cloned().unwrap_or_default()
    }

    fn message(&mut self, prefix: &str, msg: &DescriptorProto, path: Vec<i32>) {
        if msg.options.as_ref().is_some_and(|o| o.map_entry()) {
            return;
        }
        let full_name = format!("{prefix}{}", msg.name());
        let mut oneofs: Vec<Option<Oneof>> = msg
            .oneof_decl
            .iter()
            .enumerate()
            .map(|(k, o)| {
                Some(Oneof {
                    name: o.name().to_owned(),
                    comments: self.comment(&child(&path, MESSAGE_ONEOF_DECL, k)),
                    fields: Vec::new(),
                    json: self.options.oneof(&full_name, o.name()),
                })
            })
            .collect();
        let mut fields = Vec::with_capacity(msg.field.len());
        for (k, f) in msg.field.iter().enumerate() {
            let synthetic = f.proto3_optional();
            let oneof_index = f.oneof_index.and_then(|i| usize::try_from(i).ok());
            let mut oneof = None;
            if let Some(slot) = oneof_index.and_then(|i| oneofs.get_mut(i)) {
                if synthetic {
                    // The oneof proto3 `optional` synthesizes: not a real oneof.
                    *slot = None;
                } else if let Some(o) = slot {
                    o.fields.push(f.name().to_owned());
                    oneof = Some(o.name.clone());
                }
            }
            let (ty, cardinality) = self.field_type(f, synthetic);
            fields.push(Field {
                name: f.name().to_owned(),
                json_name: f.json_name().to_owned(),
                number: f.number(),
                ty,
                cardinality,
                oneof,
                comments: self.comment(&child(&path, MESSAGE_FIELD, k)),
                json: self.options.field(&full_name, f.name()),
            });
        }
        self.model.messages.push(Message {
            full_name: full_name.clone(),
            name: msg.name().to_owned(),
            package: self.file.package().to_owned(),
            file: self.file.name().to_owned(),
            comments: self.comment(&path),
            fields,
            oneofs: oneofs.into_iter().flatten().collect(),
            json_extra_fields: self.options.extra_fields(&full_name),
        });
        let nested_prefix = format!("{full_name}.");
        for (j, nested) in msg.nested_type.iter().enumerate() {
            self.message(&nested_prefix, nested, child(&path, MESSAGE_NESTED_TYPE, j));
        }
        for (j, en) in msg.enum_type.iter().enumerate() {
            self.enumeration(&nested_prefix, en, child(&path, MESSAGE_ENUM_TYPE, j));
        }
    }

    fn field_type(&self, f: &FieldDescriptorProto, synthetic: bool) -> (FieldType, Cardinality) {
        let repeated = f.label() == Label::Repeated;
        if repeated
            && f.r#type() == Type::Message
            && let Some((key, value)) = self.map_entries.get(&type_ref(f.type_name()))
        {
            let map = FieldType::Map {
                key: Box::new(value_type(key)),
                value: Box::new(value_type(value)),
            };
            return (map, Cardinality::Singular);
        }
        let cardinality = if repeated {
            Cardinality::Repeated
        } else if synthetic {
            Cardinality::Optional
        } else {
            Cardinality::Singular
        };
        (value_type(f), cardinality)
    }

    fn enumeration(&mut self, prefix: &str, en: &EnumDescriptorProto, path: Vec<i32>) {
        let full_name = format!("{prefix}{}", en.name());
        let values = en
            .value
            .iter()
            .enumerate()
            .map(|(k, v)| EnumValue {
                name: v.name().to_owned(),
                number: v.number(),
                comments: self.comment(&child(&path, ENUM_VALUE, k)),
                json_value: self.options.enum_value(&full_name, v.name()),
            })
            .collect();
        self.model.enums.push(Enum {
            full_name,
            name: en.name().to_owned(),
            package: self.file.package().to_owned(),
            file: self.file.name().to_owned(),
            comments: self.comment(&path),
            values,
        });
    }
}

/// The type of one value of a (non-map) field.
fn value_type(f: &FieldDescriptorProto) -> FieldType {
    let scalar = match f.r#type() {
        Type::Message | Type::Group => return FieldType::Message(type_ref(f.type_name())),
        Type::Enum => return FieldType::Enum(type_ref(f.type_name())),
        Type::Double => Scalar::Double,
        Type::Float => Scalar::Float,
        Type::Int32 => Scalar::Int32,
        Type::Int64 => Scalar::Int64,
        Type::Uint32 => Scalar::Uint32,
        Type::Uint64 => Scalar::Uint64,
        Type::Sint32 => Scalar::Sint32,
        Type::Sint64 => Scalar::Sint64,
        Type::Fixed32 => Scalar::Fixed32,
        Type::Fixed64 => Scalar::Fixed64,
        Type::Sfixed32 => Scalar::Sfixed32,
        Type::Sfixed64 => Scalar::Sfixed64,
        Type::Bool => Scalar::Bool,
        Type::String => Scalar::String,
        Type::Bytes => Scalar::Bytes,
    };
    FieldType::Scalar(scalar)
}

/// `path` extended with `(field, index)`.
fn child(path: &[i32], field: i32, i: usize) -> Vec<i32> {
    let mut p = Vec::with_capacity(path.len() + 2);
    p.extend_from_slice(path);
    p.extend([field, index(i)]);
    p
}

/// A declaration index as it appears in a location path.
fn index(i: usize) -> i32 {
    i32::try_from(i).expect("a proto file declares fewer than 2^31 items")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Cardinality, FieldType, Model, Scalar};

    fn repo_model() -> Model {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
        let pool = crate::load(&root).expect("the repo's protos compile");
        Model::build(&pool)
    }

    #[test]
    fn upstream_message_has_its_oneof_fields_and_comments() {
        let model = repo_model();
        let up = model
            .message("hubcast.v1.UpstreamMessage")
            .expect("UpstreamMessage is modelled");
        assert!(
            up.comments.contains("sent by a client"),
            "{:?}",
            up.comments
        );

        let oneof = up.oneof("message").expect("oneof `message`");
        assert!(!oneof.comments.is_empty());
        assert_eq!(
            oneof.fields,
            [
                "send_to_group_message",
                "event_message",
                "join_group_message",
                "leave_group_message",
                "sequence_ack_message",
                "ping_message",
                "invoke_message",
                "cancel_invocation_message",
                "stream_data_message",
                "stream_end_message"
            ]
        );
        let numbers: Vec<i32> = up.fields.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [1, 5, 6, 7, 8, 9, 100, 101, 102, 103]);
        for field in &up.fields {
            assert_eq!(field.oneof.as_deref(), Some("message"), "{}", field.name);
            assert!(!field.comments.is_empty(), "{} has no comment", field.name);
        }
        let join = up.field("join_group_message").expect("join field");
        assert_eq!(
            join.ty,
            FieldType::Message("hubcast.v1.UpstreamMessage.JoinGroupMessage".to_owned())
        );
        assert!(
            join.comments.starts_with("Join a group."),
            "{:?}",
            join.comments
        );
    }

    #[test]
    fn proto3_optional_and_maps_are_resolved() {
        let model = repo_model();
        let send = model
            .message("hubcast.v1.UpstreamMessage.SendToGroupMessage")
            .expect("nested message is modelled");
        // The synthetic oneofs of `optional` fields are not real oneofs.
        assert!(send.oneofs.is_empty(), "{:?}", send.oneofs);
        let ack = send.field("ack_id").expect("ack_id");
        assert_eq!(ack.cardinality, Cardinality::Optional);
        assert_eq!(ack.ty, FieldType::Scalar(Scalar::Uint64));
        assert_eq!(ack.json_name, "ackId");
        assert_eq!(ack.oneof, None);
        let metadata = send.field("metadata").expect("metadata");
        assert_eq!(
            metadata.ty,
            FieldType::Map {
                key: Box::new(FieldType::Scalar(Scalar::String)),
                value: Box::new(FieldType::Scalar(Scalar::String)),
            }
        );
        // Map entries are not messages of their own.
        assert!(
            !model
                .messages
                .iter()
                .any(|m| m.full_name.ends_with("MetadataEntry"))
        );
        // Well-known types are referenced, not modelled.
        let data = model
            .message("hubcast.v1.MessageData")
            .expect("MessageData");
        assert_eq!(
            data.field("protobuf_data").map(|f| &f.ty),
            Some(&FieldType::Message("google.protobuf.Any".to_owned()))
        );
        assert!(model.message("google.protobuf.Any").is_none());
    }

    #[test]
    fn services_and_enums_are_modelled() {
        let model = repo_model();
        let control = model.service("hubcast.v1.Control").expect("Control");
        let send = control
            .methods
            .iter()
            .find(|m| m.name == "SendToGroup")
            .expect("SendToGroup");
        assert_eq!(send.input, "hubcast.v1.SendToGroupRequest");
        assert!(!send.comments.is_empty());
        let events = model.service("hubcast.v1.Events").expect("Events");
        let subscribe = &events.methods[0];
        assert!(subscribe.client_streaming && subscribe.server_streaming);
        let kinds = model
            .enum_("hubcast.v1.SystemEventKind")
            .expect("SystemEventKind");
        assert_eq!(kinds.values[0].number, 0);
        assert!(kinds.values.iter().all(|v| !v.comments.is_empty()));
    }
}
