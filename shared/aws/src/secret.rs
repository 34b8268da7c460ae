//! The pseudonymization key from Secrets Manager, read once per cold start.
//!
//! The secret's value is JSON: `{"key_id": "k1", "key": "..."}`. `key` is hex (64 digits or
//! more) or, as Secrets Manager generates it, any text of at least 32 characters, used as bytes.
//! The id names the key in logs and reports; rotating means a new secret version with a new id.

use serde::Deserialize;
use streamcube_model::pseudonym::PseudonymKey;

use crate::AwsError;

#[derive(Deserialize)]
struct SecretValue {
    key_id: String,
    key: String,
}

/// Parses the secret's JSON value into a key.
pub fn parse_key(text: &str) -> Result<PseudonymKey, AwsError> {
    let v: SecretValue = serde_json::from_str(text).map_err(|e| {
        AwsError::Invalid(
            "STREAMCUBE_PSEUDONYM_SECRET_ARN",
            format!("the secret is not JSON with `key_id` and `key`: {e}"),
        )
    })?;
    let key = v.key.trim();
    let parsed = if key.len() >= 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        PseudonymKey::from_hex(&v.key_id, key)
    } else {
        PseudonymKey::from_bytes(&v.key_id, key.as_bytes().to_vec())
    };
    parsed.map_err(|e| AwsError::Invalid("STREAMCUBE_PSEUDONYM_SECRET_ARN", e.to_string()))
}

/// Reads the key from the secret `secret_id` (an ARN or a name).
pub async fn load_key(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<PseudonymKey, AwsError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| AwsError::Secret(Box::new(e)))?;
    let text = out.secret_string().ok_or_else(|| {
        AwsError::Invalid(
            "STREAMCUBE_PSEUDONYM_SECRET_ARN",
            "the secret has no string value".into(),
        )
    })?;
    parse_key(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_text_keys() {
        let hex = format!(r#"{{"key_id":"k2","key":"{}"}}"#, "ab".repeat(32));
        assert_eq!(parse_key(&hex).expect("hex key").id(), "k2");
        let text = r#"{"key_id":"k3","key":"AbcdefghijklmnopqrstuvwxyZ0123456789"}"#;
        assert_eq!(parse_key(text).expect("text key").id(), "k3");
        assert!(parse_key(r#"{"key_id":"k4","key":"short"}"#).is_err());
        assert!(parse_key("not json").is_err());
    }
}
