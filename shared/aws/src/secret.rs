//! The pseudonymization key from Secrets Manager, read once per cold start.
//!
//! The secret's value is JSON: `{"key_id": "k1", "key": "..."}`, or for a rotation
//! `{"keys": [{"key_id": "k1", "key": "..."}, {"key_id": "k2", "key": "...", "from":
//! "2027-01-01"}]}` (see [`KeyRing`]: each key pseudonymizes the events of the days from its
//! `from` on). `key` is hex (64 digits or more) or, as Secrets Manager generates it, any text of
//! at least 32 characters, used as bytes.

use streamcube_model::pseudonym::KeyRing;

use crate::AwsError;

/// Parses the secret's JSON value into the key ring.
pub fn parse_keys(text: &str) -> Result<KeyRing, AwsError> {
    KeyRing::from_json(text)
        .map_err(|e| AwsError::Invalid("STREAMCUBE_PSEUDONYM_SECRET_ARN", e.to_string()))
}

/// Reads the keys from the secret `secret_id` (an ARN or a name).
pub async fn load_keys(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> Result<KeyRing, AwsError> {
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
    parse_keys(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_text_keys() {
        let hex = format!(r#"{{"key_id":"k2","key":"{}"}}"#, "ab".repeat(32));
        assert_eq!(
            parse_keys(&hex).expect("hex key").schedule(),
            vec![("k2", None)]
        );
        let text = r#"{"key_id":"k3","key":"AbcdefghijklmnopqrstuvwxyZ0123456789"}"#;
        assert_eq!(
            parse_keys(text).expect("text key").schedule(),
            vec![("k3", None)]
        );
        assert!(parse_keys(r#"{"key_id":"k4","key":"short"}"#).is_err());
        assert!(parse_keys("not json").is_err());
    }
}
