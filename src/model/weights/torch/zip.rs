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

/// One entry of an archive being written: its name and its data in pieces, written one after
/// another (a tensor's rows need not lie together in memory).
pub type Entry<'a> = (&'a str, &'a [&'a [u8]]);

/// A stored ZIP with each entry's data aligned to 64 bytes (torch pads with an extra field, too).
pub fn write_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let pieces: Vec<[&[u8]; 1]> = entries.iter().map(|(_, data)| [*data]).collect();
    let entries: Vec<Entry> = entries.iter().zip(&pieces).map(|((name, _), p)| (*name, &p[..])).collect();
    let mut out = Vec::new();
    write_zip_to(&mut out, &entries).expect("writing to memory");
    out
}

/// [`write_zip`] streamed into `out`: each entry's data is read twice (checksum, then copy) and
/// never gathered.
pub fn write_zip_to(out: &mut impl std::io::Write, entries: &[Entry]) -> std::io::Result<()> {
    let mut at = 0usize;
    let put = |out: &mut dyn std::io::Write, at: &mut usize, bytes: &[u8]| {
        *at += bytes.len();
        out.write_all(bytes)
    };
    let mut central = Vec::new();
    for (name, pieces) in entries {
        let offset = at;
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let too_large = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "zip64 archives are not written");
        let len32 = u32::try_from(len).map_err(|_| too_large())?;
        let offset32 = u32::try_from(offset).map_err(|_| too_large())?;
        let header = 30 + name.len();
        // The extra field is 4 bytes of id and length plus padding up to the next 64-byte boundary.
        let pad = (64 - (offset + header + 4) % 64) % 64;
        let mut crc = crc32fast::Hasher::new();
        pieces.iter().for_each(|p| crc.update(p));
        let mut fixed = Vec::with_capacity(26);
        fixed.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, method 0, time, date
        fixed.extend_from_slice(&crc.finalize().to_le_bytes());
        fixed.extend_from_slice(&len32.to_le_bytes());
        fixed.extend_from_slice(&len32.to_le_bytes());
        fixed.extend_from_slice(&(name.len() as u16).to_le_bytes());
        let mut local = Vec::with_capacity(header + 4 + pad);
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&fixed);
        local.extend_from_slice(&((pad + 4) as u16).to_le_bytes());
        local.extend_from_slice(name.as_bytes());
        local.extend_from_slice(b"FB");
        local.extend_from_slice(&(pad as u16).to_le_bytes());
        local.resize(local.len() + pad, b'Z');
        put(out, &mut at, &local)?;
        for p in pieces.iter() {
            put(out, &mut at, p)?;
        }
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0]); // made by
        central.extend_from_slice(&fixed);
        central.extend_from_slice(&[0; 12]); // extra, comment, disk, internal and external attributes
        central.extend_from_slice(&offset32.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (cd_at, cd_len) = (at as u32, central.len() as u32);
    central.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    central.extend_from_slice(&[0; 4]);
    central.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    central.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    central.extend_from_slice(&cd_len.to_le_bytes());
    central.extend_from_slice(&cd_at.to_le_bytes());
    central.extend_from_slice(&[0, 0]);
    put(out, &mut at, &central)
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
        // The local header's checksum field (offset 14) holds the data's CRC-32.
        let one = write_zip(&[("a", b"123456789")]);
        assert_eq!(one[14..18], 0xCBF4_3926u32.to_le_bytes());
    }
}
