//! Whole numbers as JSON Schema means them: `"integer"` admits `7.0` as well as `7`,
//! and the API document is the contract, so a request field typed as an integer takes
//! both. Used with `#[serde(default, deserialize_with = "crate::whole::option")]`.

use serde::de::Error;
use serde::Deserialize;

/// An optional whole number that fits `T` (`7` and `7.0` alike); anything else is
/// refused with what was sent. Ranges are checked by the field's own validation.
pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    });
    whole
        .and_then(|w| T::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!(
                "{n} is not a whole number within {} bits",
                std::mem::size_of::<T>() * 8
            ))
        })
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct R {
        #[serde(default, deserialize_with = "super::option")]
        n: Option<u8>,
    }

    fn parse(s: &str) -> Result<Option<u8>, String> {
        serde_json::from_str::<R>(s)
            .map(|r| r.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_are_taken_either_way_and_others_refused() {
        assert_eq!(parse(r#"{"n": 1}"#), Ok(Some(1)));
        assert_eq!(parse(r#"{"n": 1.0}"#), Ok(Some(1)));
        assert_eq!(parse(r#"{"n": null}"#), Ok(None));
        assert_eq!(parse(r#"{}"#), Ok(None));
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 256}"#,
            r#"{"n": "1"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
