//! The JSON body of a vLLM completion request with `prompt_embeds`, written in one pass into one
//! buffer: the soft prompt's rows and the token-embedding rows go from where they lie into the
//! `torch.save` archive, base64-encoded on the way. No f32 copy of the prompt, no archive, no
//! base64 string and no JSON value of it exist; at d = 1,536 and 4,096 tokens each would be
//! 25 MB or more per request.

use crate::model::weights::torch::write_tensor;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

/// What a `torch.save` archive of one tensor adds to its data: six entries' headers, 64-byte
/// padding and the pickle (about 1.3 kB; generous, so the buffer is allocated once).
const ARCHIVE_OVERHEAD: usize = 4096;

/// `{"prompt_embeds": "<base64 torch.save([rows, d])>", ...fields}` where the tensor's rows are
/// `parts` one after another.
pub fn completion_body(parts: &[&[f32]], d: usize, fields: &Map<String, Value>) -> std::io::Result<Vec<u8>> {
    let values: usize = parts.iter().map(|p| p.len()).sum();
    if d == 0 || !values.is_multiple_of(d) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{values} values are not rows of width {d}")));
    }
    let fields = serde_json::to_vec(fields)?;
    let archive = values * 4 + ARCHIVE_OVERHEAD;
    let mut out = Vec::with_capacity(archive.div_ceil(3) * 4 + fields.len() + 24);
    out.extend_from_slice(br#"{"prompt_embeds":""#);
    {
        let mut b64 = base64::write::EncoderWriter::new(&mut out, &STANDARD);
        write_tensor(&mut b64, &[values / d, d], parts)?;
        b64.finish()?;
    }
    out.push(b'"');
    // `fields` is `{...}`: its members follow the tensor's.
    if fields.len() > 2 {
        out.push(b',');
        out.extend_from_slice(&fields[1..]);
    } else {
        out.push(b'}');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    #[test]
    fn the_body_is_the_json_a_value_would_give() {
        let (z, row) = (vec![0.25f32, -1.5, 3.0, 0.0], vec![7.0f32, 8.0]);
        let fields = json!({"max_tokens": 3, "model": "m", "stop": ["\"}"]});
        let body = completion_body(&[&z, &row], 2, fields.as_object().unwrap()).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let mut expected = fields.clone();
        let all: Vec<f32> = z.iter().chain(&row).copied().collect();
        expected["prompt_embeds"] = json!(STANDARD.encode(crate::model::weights::torch::save_tensor(&[3, 2], &all)));
        assert_eq!(v, expected);
        let raw = STANDARD.decode(v["prompt_embeds"].as_str().unwrap()).unwrap();
        assert_eq!(crate::model::weights::torch::load_tensor(&raw).unwrap(), (vec![3, 2], all));
        let empty = completion_body(&[&row], 2, &Map::new()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&empty).unwrap().as_object().unwrap().len(), 1);
        assert!(completion_body(&[&row[..1]], 2, &Map::new()).is_err());
    }

    #[test]
    fn the_buffer_is_allocated_once() {
        // A buffer that grew would have doubled its capacity past the size reserved up front.
        let rows: Vec<f32> = (0..100 * 576).map(|i| i as f32).collect();
        let fields = json!({"max_tokens": 8});
        let body = completion_body(&[&rows[..576], &rows[576..]], 576, fields.as_object().unwrap()).unwrap();
        let archive = rows.len() * 4 + ARCHIVE_OVERHEAD;
        assert_eq!(body.capacity(), archive.div_ceil(3) * 4 + serde_json::to_vec(&fields).unwrap().len() + 24);
    }
}
