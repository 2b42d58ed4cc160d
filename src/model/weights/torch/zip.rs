//! The stored (uncompressed) ZIP archives `torch.save` writes: reading their entries within
//! bounds, and writing them with torch's 64-byte alignment.

use super::{err, TorchError};

fn u16le(b: &[u8], at: usize) -> Result<usize, TorchError> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize).ok_or_else(|| TorchError("zip truncated".into()))
}
fn u32le(b: &[u8], at: usize) -> Result<usize, TorchError> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize).ok_or_else(|| TorchError("zip truncated".into()))
}

/// The stored entries of a ZIP file: (name, data). Compressed or ZIP64 entries are refused.
pub(super) fn zip_entries(b: &[u8]) -> Result<Vec<(String, &[u8])>, TorchError> {
    // End of central directory: the last 22..22+65535 bytes.
    let lo = b.len().saturating_sub(22 + 65535);
    let eocd = (lo..b.len().saturating_sub(21)).rev().find(|&i| b[i..].starts_with(&[0x50, 0x4b, 0x05, 0x06])).ok_or_else(|| TorchError("not a zip archive (torch.save output expected)".into()))?;
    let count = u16le(b, eocd + 10)?;
    let mut at = u32le(b, eocd + 16)?;
    if count > 64 {
        return err(format!("zip has {count} entries; one tensor needs at most a few"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if u32le(b, at)? != 0x0201_4b50 {
            return err("zip central directory is corrupt");
        }
        let method = u16le(b, at + 10)?;
        let csize = u32le(b, at + 20)?;
        let usize_ = u32le(b, at + 24)?;
        let (nlen, elen, clen) = (u16le(b, at + 28)?, u16le(b, at + 30)?, u16le(b, at + 32)?);
        let local = u32le(b, at + 42)?;
        let name = b.get(at + 46..at + 46 + nlen).ok_or_else(|| TorchError("zip truncated".into()))?;
        let name = String::from_utf8_lossy(name).to_string();
        if method != 0 || csize != usize_ {
            return err(format!("zip entry `{name}` is compressed; torch.save stores entries uncompressed"));
        }
        if csize == 0xFFFF_FFFF || local == 0xFFFF_FFFF {
            return err("zip64 archives are not accepted");
        }
        if u32le(b, local)? != 0x0403_4b50 {
            return err(format!("zip local header of `{name}` is corrupt"));
        }
        let start = local + 30 + u16le(b, local + 26)? + u16le(b, local + 28)?;
        let data = b.get(start..start.checked_add(csize).ok_or_else(|| TorchError("zip sizes overflow".into()))?).ok_or_else(|| TorchError(format!("zip entry `{name}` runs past the end")))?;
        out.push((name, data));
        at += 46 + nlen + elen + clen;
    }
    Ok(out)
}

/// CRC-32 (IEEE), as ZIP readers check it.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !bytes.iter().fold(!0u32, |c, &b| TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8))
}

/// A stored ZIP with each entry's data aligned to 64 bytes (torch pads with an extra field, too).
pub fn write_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len();
        let header = 30 + name.len();
        // The extra field is 4 bytes of id and length plus padding up to the next 64-byte boundary.
        let pad = (64 - (offset + header + 4) % 64) % 64;
        let crc = crc32(data);
        let mut fixed = Vec::with_capacity(26);
        fixed.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method 0, time, date
        fixed.extend_from_slice(&crc.to_le_bytes());
        fixed.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(data.len() as u32).to_le_bytes());
        fixed.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&fixed);
        out.extend_from_slice(&((pad + 4) as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"FB");
        out.extend_from_slice(&(pad as u16).to_le_bytes());
        out.resize(out.len() + pad, b'Z');
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0]); // made by
        central.extend_from_slice(&fixed);
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attributes
        central.extend_from_slice(&(offset as u32).to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_at, cd_len) = (out.len(), central.len());
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(cd_len as u32).to_le_bytes());
    out.extend_from_slice(&(cd_at as u32).to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_stored_aligned_and_checksummed() {
        let bytes = super::super::save_tensor(&[3, 5], &[0.5; 15]);
        let entries = zip_entries(&bytes).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["archive/data.pkl", "archive/.format_version", "archive/.storage_alignment", "archive/byteorder", "archive/data/0", "archive/version"]);
        for (_, data) in &entries {
            assert_eq!((data.as_ptr() as usize - bytes.as_ptr() as usize) % 64, 0);
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
