//! The restricted pickle machine for `data.pkl`: the globals of one saved tensor and nothing
//! else, never calling anything, with a budget on the values it builds and their nesting.

use super::{err, TorchError};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum V {
    Int(i64),
    Str(String),
    Bool(bool),
    None,
    Tuple(Vec<V>),
    Global(String, String),
    Persistent(Box<V>),
    Reduce(Box<V>, Box<V>),
    Dict,
    Mark,
}

/// Most values (tuple items counted one by one) the machine may build for one payload. A saved
/// tensor needs about 20.
pub const MAX_VALUES: usize = 512;
/// Deepest nesting of tuples and calls. A saved tensor needs 4.
pub const MAX_DEPTH: usize = 8;
/// Most opcodes executed for one payload. A saved tensor needs about 40.
pub const MAX_OPS: usize = 2_000;

/// Values built and the nesting depth of one value: (values, depth). Recursion is bounded
/// because no value deeper than [`MAX_DEPTH`] is ever built.
fn measure(v: &V) -> (usize, usize) {
    match v {
        V::Tuple(items) => items.iter().map(measure).fold((1, 1), |(n, d), (n2, d2)| (n + n2, d.max(d2 + 1))),
        V::Persistent(a) => {
            let (n, d) = measure(a);
            (n + 1, d + 1)
        }
        V::Reduce(f, a) => {
            let ((n1, d1), (n2, d2)) = (measure(f), measure(a));
            (n1 + n2 + 1, d1.max(d2) + 1)
        }
        _ => (1, 1),
    }
}

/// Charge the budget for a new value: one value for a fresh node (its items were charged when
/// they were built), all of them for a copy out of or into the memo.
fn charge(built: &mut usize, v: V, copy: bool) -> Result<V, TorchError> {
    let (n, depth) = measure(&v);
    *built += if copy { n } else { 1 };
    if depth > MAX_DEPTH {
        return err(format!("pickle nests values {depth} deep; a saved tensor needs at most {MAX_DEPTH}"));
    }
    if *built > MAX_VALUES {
        return err(format!("pickle builds more than {MAX_VALUES} values; a saved tensor needs a few dozen"));
    }
    Ok(v)
}

/// Run the restricted pickle machine over `data.pkl`; returns the top object.
pub(super) fn unpickle(p: &[u8]) -> Result<V, TorchError> {
    let mut built = 0usize;
    let mut stack: Vec<V> = Vec::new();
    let mut memo: std::collections::HashMap<u32, V> = Default::default();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], TorchError> {
        let s = p.get(*i..*i + n).ok_or_else(|| TorchError("pickle truncated".into()))?;
        *i += n;
        Ok(s)
    };
    let line = |i: &mut usize| -> Result<String, TorchError> {
        let end = p[*i..].iter().position(|&c| c == b'\n').ok_or_else(|| TorchError("pickle truncated".into()))?;
        let s = String::from_utf8_lossy(&p[*i..*i + end]).to_string();
        *i += end + 1;
        Ok(s)
    };
    for _ in 0..MAX_OPS {
        if stack.len() > MAX_VALUES || memo.len() > MAX_VALUES {
            return err("pickle is too large for one tensor");
        }
        let op = *p.get(i).ok_or_else(|| TorchError("pickle truncated".into()))?;
        i += 1;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            }
            b'c' => {
                let (m, n) = (line(&mut i)?, line(&mut i)?);
                let allowed = matches!((m.as_str(), n.as_str()),
                    ("torch._utils", "_rebuild_tensor_v2") | ("collections", "OrderedDict")
                    | ("torch", "FloatStorage" | "HalfStorage" | "BFloat16Storage" | "DoubleStorage"));
                if !allowed {
                    return err(format!("pickle refers to `{m}.{n}`, which a saved tensor does not need"));
                }
                stack.push(charge(&mut built, V::Global(m, n), false)?);
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as u32;
                let top = stack.last().cloned().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                memo.insert(k, charge(&mut built, top, true)?);
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                let top = stack.last().cloned().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                memo.insert(k, charge(&mut built, top, true)?);
            }
            b'h' => {
                let k = take(&mut i, 1)?[0] as u32;
                let v = memo.get(&k).cloned().ok_or_else(|| TorchError("pickle memo miss".into()))?;
                stack.push(charge(&mut built, v, true)?);
            }
            b'j' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap());
                let v = memo.get(&k).cloned().ok_or_else(|| TorchError("pickle memo miss".into()))?;
                stack.push(charge(&mut built, v, true)?);
            }
            b'(' => stack.push(charge(&mut built, V::Mark, false)?),
            b')' => stack.push(charge(&mut built, V::Tuple(vec![]), false)?),
            b'}' => stack.push(charge(&mut built, V::Dict, false)?),
            b'N' => stack.push(charge(&mut built, V::None, false)?),
            0x88 => stack.push(charge(&mut built, V::Bool(true), false)?),
            0x89 => stack.push(charge(&mut built, V::Bool(false), false)?),
            b'K' => stack.push(charge(&mut built, V::Int(take(&mut i, 1)?[0] as i64), false)?),
            b'M' => stack.push(charge(&mut built, V::Int(u16::from_le_bytes(take(&mut i, 2)?.try_into().unwrap()) as i64), false)?),
            b'J' => stack.push(charge(&mut built, V::Int(i32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap()) as i64), false)?),
            0x8a => {
                let n = take(&mut i, 1)?[0] as usize;
                let bytes = take(&mut i, n)?;
                if n > 8 {
                    return err("pickle integer too large");
                }
                let mut v: i64 = 0;
                for (k, &byte) in bytes.iter().enumerate() {
                    v |= (byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(charge(&mut built, V::Int(v), false)?);
            }
            b'X' => {
                let n = u32::from_le_bytes(take(&mut i, 4)?.try_into().unwrap()) as usize;
                stack.push(charge(&mut built, V::Str(String::from_utf8_lossy(take(&mut i, n)?).to_string()), false)?);
            }
            0x8c => {
                let n = take(&mut i, 1)?[0] as usize;
                stack.push(charge(&mut built, V::Str(String::from_utf8_lossy(take(&mut i, n)?).to_string()), false)?);
            }
            b't' => {
                let m = stack.iter().rposition(|v| *v == V::Mark).ok_or_else(|| TorchError("pickle mark missing".into()))?;
                let items = stack.split_off(m + 1);
                stack.pop();
                stack.push(charge(&mut built, V::Tuple(items), false)?);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return err("pickle stack underflow");
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(charge(&mut built, V::Tuple(items), false)?);
            }
            b'Q' => {
                let pid = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                stack.push(charge(&mut built, V::Persistent(Box::new(pid)), false)?);
            }
            b'R' => {
                let args = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                let f = stack.pop().ok_or_else(|| TorchError("pickle stack empty".into()))?;
                stack.push(charge(&mut built, V::Reduce(Box::new(f), Box::new(args)), false)?);
            }
            b'u' => {
                // SETITEMS on an OrderedDict of backward hooks: a saved soft prompt has none.
                let m = stack.iter().rposition(|v| *v == V::Mark).ok_or_else(|| TorchError("pickle mark missing".into()))?;
                if stack.len() != m + 1 {
                    return err("tensor carries backward hooks");
                }
                stack.pop();
            }
            b'.' => return stack.pop().ok_or_else(|| TorchError("pickle is empty".into())),
            other => return err(format!("pickle opcode 0x{other:02x} is not used by torch.save for a tensor")),
        }
    }
    err("pickle is too long")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pickle that memoizes a tuple and doubles it `n` times (`h0 h0 t2 q0` repeated).
    fn doubling(n: usize) -> Vec<u8> {
        let mut p = b"\x80\x02)q\x00".to_vec();
        for _ in 0..n {
            p.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        p
    }

    #[test]
    fn pickles_that_multiply_or_nest_values_are_refused() {
        // 40 doublings would build 2^40 values; the budget stops it after a few.
        let e = unpickle(&doubling(40)).unwrap_err().to_string();
        assert!(e.contains("more than 512 values"), "{e}");
        assert!(unpickle(&doubling(3)).is_ok());
        // 20,000 nested one-tuples.
        let mut deep = b"\x80\x02)".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 20_000));
        deep.push(b'.');
        let e = unpickle(&deep).unwrap_err().to_string();
        assert!(e.contains("nests values 9 deep"), "{e}");
        // 20,000 open marks: the op budget ends it.
        let mut marks = b"\x80\x02".to_vec();
        marks.extend(std::iter::repeat_n(b'(', 20_000));
        assert!(unpickle(&marks).is_err());
    }
}
