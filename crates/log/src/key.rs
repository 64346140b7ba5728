//! Fixed-size keys built from identifiers: the one copy of "an SN held inline".
//!
//! The writer's views (`ledger::index`) and the fleet's partition index (`projections::fleet`) key
//! terminals by [`CompactSn`] (24 bytes: 22 inline, longer SNs boxed), and `replay verify`'s stream
//! versions by 15 bytes packed into a `u128`: all without a heap pointer to chase for real SNs (10 to 20
//! characters), all built on [`InlineSn`].

/// An identifier of at most `N` bytes, held inline: its length and its bytes, zero-padded to `N`.
///
/// The representation is canonical (the padding is always zero), so the derived equality is the
/// identifiers' equality: two fixed-size compares, no `memcmp` call. It is built only from a `&str`,
/// so its bytes are always UTF-8.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineSn<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineSn<N> {
    /// The length is held in one byte.
    const LEN_FITS_A_BYTE: () = assert!(N <= u8::MAX as usize, "an inline key's length is one byte");

    /// The inline copy of `sn`, or `None` when it is longer than `N` bytes.
    #[inline]
    pub fn new(sn: &str) -> Option<Self> {
        let () = Self::LEN_FITS_A_BYTE;
        let len = u8::try_from(sn.len()).ok()?;
        let mut bytes = [0u8; N];
        bytes.get_mut(..sn.len())?.copy_from_slice(sn.as_bytes());
        Some(InlineSn { len, bytes })
    }

    /// The identifier's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        // `new` copies a whole `&str`, so the bytes are UTF-8.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Its length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether it is empty (never, for a valid SN).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl InlineSn<15> {
    /// Packed into a `u128` (little-endian: bytes 0..15 the padded identifier, byte 15 its length): a
    /// key that hashes and compares as one integer.
    #[inline]
    pub fn to_u128(&self) -> u128 {
        let mut packed = [0u8; 16];
        let (text, len) = packed.split_at_mut(15);
        text.copy_from_slice(&self.bytes);
        len.fill(self.len);
        u128::from_le_bytes(packed)
    }

    /// The key [`to_u128`](Self::to_u128) packed (`None` for a `u128` no key packs to).
    pub fn from_u128(packed: u128) -> Option<Self> {
        let bytes = packed.to_le_bytes();
        let (text, len) = bytes.split_first_chunk::<15>()?;
        let len = *len.first()?;
        let sn = std::str::from_utf8(text.get(..usize::from(len))?).ok()?;
        Self::new(sn)
    }
}

/// An SN as a map key: held inline (no heap, no pointer to chase on lookup) when it is at most
/// [`CompactSn::INLINE`] bytes, which covers real SNs (10 to 20 characters); longer ones are boxed.
///
/// The representation is canonical (inline exactly when short enough), so two keys are equal when their
/// variants and fields are: an inline comparison is two fixed-size array compares, no `memcmp` call.
/// It is only ever built from a `&str`, so its bytes are always UTF-8. 24 bytes, against 65 for an
/// `InlineSn` that holds every valid SN (64 bytes): in a view of millions of terminals the difference is
/// most of a terminal's entry.
#[derive(Clone)]
pub enum CompactSn {
    /// A short SN, inline.
    Inline(InlineSn<{ CompactSn::INLINE }>),
    /// A longer SN.
    Heap(Box<str>),
}

// The enum stays 24 bytes: a length byte, 22 inline bytes and the tag (a `Box<str>` is 16).
const _: () = assert!(std::mem::size_of::<CompactSn>() == 24, "a CompactSn is 24 bytes");

impl CompactSn {
    /// The longest SN held inline (the enum stays 24 bytes).
    pub const INLINE: usize = 22;

    /// The key of `sn` (inline when it fits, so the same SN always gets the same variant).
    #[inline]
    pub fn new(sn: &str) -> CompactSn {
        match InlineSn::new(sn) {
            Some(inline) => CompactSn::Inline(inline),
            None => CompactSn::Heap(sn.into()),
        }
    }

    /// The SN's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CompactSn::Inline(inline) => inline.as_bytes(),
            CompactSn::Heap(sn) => sn.as_bytes(),
        }
    }

    /// The SN as text.
    pub fn as_str(&self) -> &str {
        match self {
            CompactSn::Inline(inline) => inline.as_str(),
            CompactSn::Heap(sn) => sn,
        }
    }

    /// The owned, validated SN. Keys are built from validated SNs, so this is `None` only if that
    /// invariant broke (asserted in debug builds).
    pub fn to_sn(&self) -> Option<crate::model::Sn> {
        let sn = crate::model::Sn::parse(self.as_str()).ok();
        debug_assert!(sn.is_some(), "SN keys are built from validated SNs");
        sn
    }

    /// Bytes of the SN on the heap (0 when inline).
    pub fn heap_len(&self) -> usize {
        match self {
            CompactSn::Inline(_) => 0,
            CompactSn::Heap(sn) => sn.len(),
        }
    }
}

impl PartialEq for CompactSn {
    #[inline]
    fn eq(&self, other: &CompactSn) -> bool {
        match (self, other) {
            (CompactSn::Inline(a), CompactSn::Inline(b)) => a == b,
            (CompactSn::Heap(a), CompactSn::Heap(b)) => a == b,
            // `new` is canonical: equal SNs never take different variants.
            _ => false,
        }
    }
}
impl Eq for CompactSn {}
impl std::hash::Hash for CompactSn {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}
impl std::fmt::Debug for CompactSn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<const N: usize> std::fmt::Debug for InlineSn<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn inline_keys_are_canonical_and_round_trip() {
        let a = InlineSn::<22>::new("LKL0000001234").unwrap();
        assert_eq!(a.as_str(), "LKL0000001234");
        assert_eq!(a, InlineSn::<22>::new("LKL0000001234").unwrap());
        assert_ne!(a, InlineSn::<22>::new("LKL000000123").unwrap());
        assert!(InlineSn::<4>::new("12345").is_none());
        assert_eq!(InlineSn::<4>::new("1234").unwrap().len(), 4);
        let short = InlineSn::<15>::new("SN00000000001").unwrap();
        assert_eq!(InlineSn::<15>::from_u128(short.to_u128()), Some(short));
        assert_ne!(short.to_u128(), InlineSn::<15>::new("SN000000000001").unwrap().to_u128());
    }

    #[test]
    fn compact_keys_are_inline_up_to_22_bytes_and_equal_by_text() {
        let short = "A".repeat(CompactSn::INLINE);
        let long = "A".repeat(CompactSn::INLINE + 1);
        assert!(matches!(CompactSn::new(&short), CompactSn::Inline(_)));
        assert!(matches!(CompactSn::new(&long), CompactSn::Heap(_)));
        assert_eq!(CompactSn::new(&long).as_str(), long);
        assert_eq!(CompactSn::new(&long).heap_len(), long.len());
        assert_eq!(CompactSn::new(&short).heap_len(), 0);
        assert_eq!(CompactSn::new(&short), CompactSn::new(&short));
        assert_ne!(CompactSn::new(&short), CompactSn::new(&long));
        assert_eq!(CompactSn::new(&"B".repeat(64)).as_bytes(), "B".repeat(64).as_bytes());
        assert_eq!(CompactSn::new(&long).to_sn().map(|sn| sn.to_string()), Some(long.clone()));
        assert_eq!(CompactSn::new(&short).to_sn().map(|sn| sn.to_string()), Some(short.clone()));
    }
}
