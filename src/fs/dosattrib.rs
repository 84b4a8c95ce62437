//! Samba's DOS attributes (`user.DOSATTRIB`, written with `store dos attributes = yes`) as
//! the mount presents them: a stub carries FILE_ATTRIBUTE_OFFLINE and
//! FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS, a file whose data is local carries neither. The
//! bits are derived, never stored: what Samba writes is stored without them.
//!
//! The value is Samba's NDR blob `xattr_DosAttrib` (librpc/idl/xattr.idl): an attribute
//! string (empty since Samba 3.2: one NUL, padded to 2 bytes), the version (u16), the
//! union's switch (u16, the same version), then, 8-aligned, the version's fields. The DOS
//! attributes are a u32: the first field of version 1, the second of versions 2 to 5 (after
//! `flags` / `valid_flags`). A value this does not read (another layout, a short value) is
//! passed on as it is.

use std::borrow::Cow;

/// The xattr Samba keeps DOS attributes in.
pub const NAME: &[u8] = b"user.DOSATTRIB";

/// FILE_ATTRIBUTE_OFFLINE: the data is not immediately available.
pub const OFFLINE: u32 = 0x0000_1000;
/// FILE_ATTRIBUTE_RECALL_ON_OPEN.
pub const RECALL_ON_OPEN: u32 = 0x0004_0000;
/// FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS: reading the data brings it back.
pub const RECALL_ON_DATA_ACCESS: u32 = 0x0040_0000;

/// The bits a stub shows.
const STUB_BITS: u32 = OFFLINE | RECALL_ON_DATA_ACCESS;
/// The bits never stored (derived from the file's state).
const DERIVED: u32 = OFFLINE | RECALL_ON_OPEN | RECALL_ON_DATA_ACCESS;

/// XATTR_DOSINFO_ATTRIB: version 3+ `valid_flags`, the attributes are valid.
const VALID_ATTRIB: u32 = 0x1;

/// Where the attributes are in `blob`, if it is a layout this reads.
fn attrib_offset(blob: &[u8]) -> Option<usize> {
    // The empty attribute string and its padding, then version and switch.
    if blob.len() < 8 || blob[0] != 0 || blob[1] != 0 {
        return None;
    }
    let version = u16::from_le_bytes([blob[2], blob[3]]);
    let switch = u16::from_le_bytes([blob[4], blob[5]]);
    if version != switch {
        return None;
    }
    let off = match version {
        1 => 8,
        2..=5 => 12,
        _ => return None,
    };
    (blob.len() >= off + 4).then_some(off)
}

fn attrib(blob: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(blob[off..off + 4].try_into().unwrap())
}

fn with_attrib(blob: &[u8], off: usize, value: u32) -> Vec<u8> {
    let mut v = blob.to_vec();
    v[off..off + 4].copy_from_slice(&value.to_le_bytes());
    v
}

/// What the mount shows for `stored` (the backing file's value; `None`: it has none) of a
/// file that is (`stub`) or is not a stub. `None`: no value (ENODATA).
pub fn present(stored: Option<&[u8]>, stub: bool) -> Option<Cow<'_, [u8]>> {
    let Some(blob) = stored else {
        // A stub without a value gets one of its own: version 5, attributes only.
        return stub.then(|| Cow::Owned(synthesized(STUB_BITS)));
    };
    let Some(off) = attrib_offset(blob) else {
        return Some(Cow::Borrowed(blob));
    };
    let a = attrib(blob, off);
    let want = if stub {
        (a & !DERIVED) | STUB_BITS
    } else {
        a & !DERIVED
    };
    if want == a {
        Some(Cow::Borrowed(blob))
    } else {
        Some(Cow::Owned(with_attrib(blob, off, want)))
    }
}

/// What is stored when a client writes `value`: the derived bits taken out.
pub fn to_store(value: &[u8]) -> Cow<'_, [u8]> {
    match attrib_offset(value) {
        Some(off) if attrib(value, off) & DERIVED != 0 => {
            Cow::Owned(with_attrib(value, off, attrib(value, off) & !DERIVED))
        }
        _ => Cow::Borrowed(value),
    }
}

/// A version 5 value with attributes `a` (no creation time: Samba takes the file's).
fn synthesized(a: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&[0, 0]); // the empty attribute string, padded
    v.extend_from_slice(&5u16.to_le_bytes()); // version
    v.extend_from_slice(&5u16.to_le_bytes()); // switch
    v.extend_from_slice(&[0, 0]); // to 8
    v.extend_from_slice(&VALID_ATTRIB.to_le_bytes());
    v.extend_from_slice(&a.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes()); // create_time: not valid
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What smbd 4.17 wrote for `setmode f +h` (read back with getfattr -e hex).
    const HIDDEN_V5: &str = "000005000500000011000000020000009019f864c584dd01";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_stub_shows_offline_and_recall_on_data_access_and_keeps_the_rest() {
        let b = hex(HIDDEN_V5);
        let shown = present(Some(&b), true).unwrap();
        assert_eq!(attrib(&shown, 12), 0x2 | OFFLINE | RECALL_ON_DATA_ACCESS);
        assert_eq!(shown.len(), b.len());
        assert_eq!(&shown[..12], &b[..12]);
        assert_eq!(&shown[16..], &b[16..], "the creation time is kept");
        // Resident: as stored.
        assert!(matches!(present(Some(&b), false), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn derived_bits_are_never_stored_nor_shown_on_a_resident_file() {
        let b = hex(HIDDEN_V5);
        let offline = with_attrib(&b, 12, 0x2 | OFFLINE | RECALL_ON_OPEN);
        assert_eq!(to_store(&offline).as_ref(), &b[..]);
        assert_eq!(present(Some(&offline), false).unwrap().as_ref(), &b[..]);
        assert!(matches!(to_store(&b), Cow::Borrowed(_)));
    }

    #[test]
    fn a_stub_without_a_value_gets_one_and_a_resident_file_none() {
        let s = present(None, true).unwrap();
        assert_eq!(attrib_offset(&s), Some(12));
        assert_eq!(attrib(&s, 12), OFFLINE | RECALL_ON_DATA_ACCESS);
        assert_eq!(
            u32::from_le_bytes(s[8..12].try_into().unwrap()),
            VALID_ATTRIB
        );
        assert!(present(None, false).is_none());
    }

    #[test]
    fn versions_one_to_four_and_unknown_layouts() {
        // Version 1: attributes first.
        let mut v1 = vec![0, 0, 1, 0, 1, 0, 0, 0];
        v1.extend_from_slice(&0x20u32.to_le_bytes());
        v1.extend_from_slice(&[0; 36]);
        let shown = present(Some(&v1), true).unwrap();
        assert_eq!(attrib(&shown, 8), 0x20 | STUB_BITS);
        // Version 3: after valid_flags.
        let mut v3 = vec![0, 0, 3, 0, 3, 0, 0, 0];
        v3.extend_from_slice(&1u32.to_le_bytes());
        v3.extend_from_slice(&0x1u32.to_le_bytes());
        v3.extend_from_slice(&[0; 36]);
        assert_eq!(
            attrib(&present(Some(&v3), true).unwrap(), 12),
            0x1 | STUB_BITS
        );
        // Not read: passed on as they are.
        for odd in [
            b"0x20\0\0\x01\0\x01\0\0\0\x20\0\0\0".to_vec(),
            vec![0, 0, 9, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![0, 0, 5, 0],
            vec![0, 0, 5, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0x20, 0, 0, 0],
        ] {
            assert_eq!(present(Some(&odd), true).unwrap().as_ref(), &odd[..]);
            assert_eq!(to_store(&odd).as_ref(), &odd[..]);
        }
    }
}
