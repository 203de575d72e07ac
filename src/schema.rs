//! Schema validation at the edge (feature `schema`): JSON Schema checked before a handler runs.
//!
//! It owns compiling a schema once ([`Schema::new`], [`Schema::from_file`]; JSON Schema 2020-12
//! unless the schema's `$schema` names another draft; the `jsonschema` crate, without its HTTP
//! and file resolvers, so a `$ref` outside the document fails to compile) and turning a payload
//! that fails it into a [`Failure`]: `permanent` (it will never pass: dead-lettered at once) with
//! the failing keyword, the instance path and the schema path, never the value
//! ([`SchemaViolation`]). A payload that is not JSON at all is `undecodable`.
//!
//! It does not decide where validation happens: the processor validates each payload
//! ([`Processor::with_schema`](crate::Processor::with_schema), after the envelope is opened and
//! before decoding), a [`Router`](crate::router::Router) per route.
//!
//! # Example
//! ```
//! use sqskit::schema::Schema;
//! let schema = Schema::new(&serde_json::json!({
//!     "type": "object",
//!     "required": ["id"],
//!     "properties": {"id": {"type": "integer"}, "items": {"type": "array", "items": {"type": "string"}}}
//! })).unwrap();
//! assert!(schema.validate(&serde_json::json!({"id": 1, "items": ["a"]})).is_ok());
//! let v = schema.validate(&serde_json::json!({"id": 1, "items": ["a", 4111111111111111u64]})).unwrap_err();
//! assert_eq!((v.keyword.as_str(), v.instance_path.as_str()), ("type", "/items/1"));
//! assert!(!v.to_string().contains("4111"));
//! ```

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::Error;
use crate::outcome::{Failure, FailureKind};

/// A compiled JSON Schema. Cheap to clone (shared).
#[derive(Clone)]
pub struct Schema {
    validator: Arc<jsonschema::Validator>,
    name: Option<Arc<str>>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Why a payload failed its schema: the keyword, where in the payload and where in the schema;
/// `message` is the validator's text with the value masked (`value is not of type "integer"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("keyword `{keyword}` failed at `{instance_path}` (schema `{schema_path}`): {message}")]
pub struct SchemaViolation {
    /// The JSON Schema keyword (`type`, `required`, `maxLength`, …).
    pub keyword: String,
    /// A JSON Pointer to the failing part of the payload (`""` is the whole payload).
    pub instance_path: String,
    /// A JSON Pointer to the keyword in the schema.
    pub schema_path: String,
    /// What is wrong, without the value.
    pub message: String,
}

impl Schema {
    /// Compile `schema` (2020-12 unless its `$schema` says otherwise).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `schema` when it is not a valid schema or a `$ref` cannot be
    /// resolved within it.
    pub fn new(schema: &Value) -> Result<Self, Error> {
        Self::named(schema, None)
    }

    /// Read and compile the JSON Schema in the file at `path` (`--schema FILE`).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `schema` and the file when it cannot be read, is not JSON or is
    /// not a valid schema.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let invalid = |reason: String| Error::Invalid { what: "schema", reason: format!("{shown}: {reason}") };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
        Self::named(&value, Some(&shown)).map_err(|e| match e {
            Error::Invalid { reason, .. } => invalid(reason),
            other => other,
        })
    }

    fn named(schema: &Value, name: Option<&str>) -> Result<Self, Error> {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| Error::Invalid { what: "schema", reason: format!("not a valid JSON Schema: {e}") })?;
        Ok(Self { validator: Arc::new(validator), name: name.map(Into::into) })
    }

    /// The file the schema was read from ([`Schema::from_file`]).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Check `payload`: the first violation found, if any.
    ///
    /// # Errors
    /// The [`SchemaViolation`].
    pub fn validate(&self, payload: &Value) -> Result<(), SchemaViolation> {
        self.validator.validate(payload).map_err(|e| SchemaViolation {
            keyword: e.kind().keyword().to_string(),
            instance_path: e.instance_path().to_string(),
            schema_path: e.schema_path().to_string(),
            message: e.masked().to_string(),
        })
    }

    /// Check a payload given as text, as the processor does: a failure is `permanent` with the
    /// [`SchemaViolation`] (the whole validator text, value included, with `full`), text that
    /// is not JSON `undecodable`.
    ///
    /// # Errors
    /// The [`Failure`] to record.
    pub fn check_text(&self, text: &str, full: bool) -> Result<(), Failure> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Eof => "it ends early",
                _ => "syntax error",
            };
            let error = format!("schema: the payload is not JSON ({what} at line {} column {})", e.line(), e.column());
            Failure { kind: FailureKind::Undecodable, error, retry_after: None }
        })?;
        self.check(&value, full)
    }

    /// [`Schema::check_text`] for a payload already parsed.
    ///
    /// # Errors
    /// The `permanent` [`Failure`] to record.
    pub fn check(&self, payload: &Value, full: bool) -> Result<(), Failure> {
        self.validate(payload).map_err(|v| {
            let mut error = match &self.name {
                Some(name) => format!("schema {name}: {v}"),
                None => format!("schema: {v}"),
            };
            if full {
                if let Err(e) = self.validator.validate(payload) {
                    error = format!("{error} ({e})");
                }
            }
            Failure { kind: FailureKind::Permanent, error, retry_after: None }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_schema() -> Schema {
        Schema::new(&json!({
            "type": "object",
            "required": ["id", "email"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "email": {"type": "string", "maxLength": 20},
                "lines": {"type": "array", "items": {"type": "object", "required": ["sku"]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn violations_name_keyword_and_paths_never_the_value() {
        let s = order_schema();
        for (payload, keyword, path) in [
            (json!({"id": 1}), "required", ""),
            (json!({"id": 0, "email": "a@b"}), "minimum", "/id"),
            (json!({"id": 1, "email": "secret-person@example.com"}), "maxLength", "/email"),
            (json!({"id": 1, "email": "a@b", "lines": [{"sku": "x"}, {"qty": 2}]}), "required", "/lines/1"),
            (json!({"id": "secret-id", "email": "a@b"}), "type", "/id"),
        ] {
            let v = s.validate(&payload).unwrap_err();
            assert_eq!((v.keyword.as_str(), v.instance_path.as_str()), (keyword, path), "{payload}");
            let f = s.check(&payload, false).unwrap_err();
            assert_eq!(f.kind, FailureKind::Permanent);
            assert!(!f.error.contains("secret"), "{}", f.error);
            assert!(f.error.contains(&format!("keyword `{keyword}` failed at `{path}`")), "{}", f.error);
        }
        assert!(s.check(&json!({"id": 2, "email": "a@b"}), false).is_ok());
    }

    #[test]
    fn text_that_is_not_json_is_undecodable() {
        let f = order_schema().check_text("{not json", false).unwrap_err();
        assert_eq!(f.kind, FailureKind::Undecodable);
        assert!(f.error.starts_with("schema: the payload is not JSON"), "{}", f.error);
    }

    #[test]
    fn bad_schemas_and_files_are_refused_naming_them() {
        let e = Schema::new(&json!({"type": "no-such-type"})).unwrap_err().to_string();
        assert!(e.starts_with("invalid schema: not a valid JSON Schema"), "{e}");
        let e = Schema::new(&json!({"$ref": "https://example.com/other.json"})).unwrap_err().to_string();
        assert!(e.starts_with("invalid schema:"), "{e}");
        let e = Schema::from_file("/nonexistent/order.json").unwrap_err().to_string();
        assert!(e.starts_with("invalid schema: /nonexistent/order.json: cannot read it"), "{e}");
    }
}
