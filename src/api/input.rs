//! Typed reads of a JSON request body that collect every field error into one 422, with
//! Laravel's conventions (an empty string is `null`; booleans may be `0`/`1`/`"true"`…) so
//! FlexiAPI clients get the answers they expect.

use crate::api::validate::Errors;
use crate::error::AppError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A request body (a JSON object, or a form turned into one) being read field by field.
#[derive(Default)]
pub struct Input {
    map: Map<String, Value>,
    errors: Errors,
}

impl Input {
    /// Wraps a parsed body; anything but an object is a 400, as FlexiAPI's JSON guard.
    pub fn new(body: Value) -> Result<Input, AppError> {
        match body {
            Value::Object(map) => Ok(Input {
                map,
                errors: Errors::default(),
            }),
            Value::Null => Ok(Input::default()),
            _ => Err(AppError::BadRequest(
                "Invalid JSON: the body must be a JSON object".to_string(),
            )),
        }
    }

    /// The raw value, with `""` read as `null` (Laravel's ConvertEmptyStringsToNull).
    fn value(&self, field: &str) -> Option<&Value> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(v) => Some(v),
        }
    }

    /// Whether the field was sent at all (even as `null`).
    pub fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    /// Whether the field was sent as `null` or `""` (present, but empty: Laravel's `string`
    /// rule refuses it where `nullable` is not given).
    pub fn sent_empty(&self, field: &str) -> bool {
        self.has(field) && self.value(field).is_none()
    }

    /// Records a field error.
    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.add(field, message);
    }

    /// The collected errors, for validators that add their own.
    pub fn errors(&mut self) -> &mut Errors {
        &mut self.errors
    }

    /// An optional string; another type is an error.
    pub fn string(&mut self, field: &str) -> Option<String> {
        match self.value(field) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(field, format!("The {field} field must be a string."));
                None
            }
        }
    }

    /// A required string (absent, `null` and `""` are errors).
    pub fn required_string(&mut self, field: &str) -> Option<String> {
        if self.value(field).is_none() {
            self.error(field, format!("The {field} field is required."));
            return None;
        }
        self.string(field)
    }

    /// An optional boolean: `true`/`false`, `0`/`1`, or those as strings.
    pub fn boolean(&mut self, field: &str) -> Option<bool> {
        let parsed = match self.value(field)? {
            Value::Bool(b) => Some(*b),
            Value::Number(n) if n.as_i64() == Some(0) => Some(false),
            Value::Number(n) if n.as_i64() == Some(1) => Some(true),
            Value::String(s) => match s.as_str() {
                "1" | "true" => Some(true),
                "0" | "false" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.error(field, format!("The {field} field must be true or false."));
        }
        parsed
    }

    /// An optional integer (a JSON number or a numeric string).
    pub fn integer(&mut self, field: &str) -> Option<i64> {
        let parsed = match self.value(field)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.error(field, format!("The {field} field must be an integer."));
        }
        parsed
    }

    /// An optional object of string values (`{}` when sent empty).
    pub fn dictionary(&mut self, field: &str) -> Option<BTreeMap<String, String>> {
        let value = match self.map.get(field) {
            None | Some(Value::Null) => return None,
            Some(v) => v.clone(),
        };
        let Value::Object(map) = value else {
            self.error(
                field,
                format!("The {field} field must be an object of strings."),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            match v {
                Value::String(s) => {
                    out.insert(k, s);
                }
                _ => self.error(field, format!("The value of {k:?} must be a string.")),
            }
        }
        Some(out)
    }

    /// A nested object read the same way (`None` when absent; another type is an error).
    pub fn object(&mut self, field: &str) -> Option<Input> {
        match self.map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(Input {
                map: map.clone(),
                errors: Errors::default(),
            }),
            Some(_) => {
                self.error(field, format!("The {field} field must be an object."));
                None
            }
        }
    }

    /// Takes a nested input's errors, naming them `parent.field`.
    pub fn absorb(&mut self, parent: &str, nested: Input) {
        if let Err(AppError::Validation(fields)) = nested.errors.finish() {
            for (k, msgs) in fields {
                for m in msgs {
                    self.error(&format!("{parent}.{k}"), m);
                }
            }
        }
    }

    /// Takes the field errors of a validator's verdict.
    pub fn merge(&mut self, verdict: Result<(), AppError>) {
        if let Err(AppError::Validation(fields)) = verdict {
            for (k, msgs) in fields {
                for m in msgs {
                    self.error(&k, m);
                }
            }
        }
    }

    /// `Ok` when no field failed, else one 422 with every message.
    pub fn finish(self) -> Result<(), AppError> {
        self.errors.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn laravel_conventions() {
        let mut i =
            Input::new(json!({"a": "", "b": "1", "c": 0, "d": "x", "n": "12", "o": 3})).unwrap();
        assert_eq!(i.string("a"), None);
        assert_eq!(i.required_string("a"), None);
        assert_eq!(i.boolean("b"), Some(true));
        assert_eq!(i.boolean("c"), Some(false));
        assert_eq!(i.boolean("d"), None);
        assert_eq!(i.integer("n"), Some(12));
        assert_eq!(i.string("o"), None);
        let Err(AppError::Validation(errors)) = i.finish() else {
            panic!("expected a 422")
        };
        assert_eq!(errors.keys().collect::<Vec<_>>(), ["a", "d", "o"]);
        assert!(Input::new(json!([1])).is_err());
        assert!(Input::new(Value::Null).unwrap().finish().is_ok());
    }
}
