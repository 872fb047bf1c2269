//! RSASSA-PKCS1-v1_5 signing with SHA-256 (RS256) from an RSA private key in DER: a small
//! big-number core (Montgomery multiplication, CRT), for a client that signs its own token
//! request about once an hour. Not constant-time: the signer holds its own key and the
//! signatures leave only towards the token endpoint.
// Limb indices below are bounded by the lengths each function sets up itself.
#![allow(clippy::indexing_slicing)]

use super::sha256;

/// Little-endian 32-bit limbs.
type Limbs = Vec<u32>;

pub struct RsaKey {
    modulus: Limbs,
    public_exponent: Limbs,
    prime_p: Limbs,
    prime_q: Limbs,
    exponent_p: Limbs,
    exponent_q: Limbs,
    coefficient: Limbs,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({} bits, redacted)", self.bits())
    }
}

/// Why a key cannot be used; never carries key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFault(pub &'static str);

/// DER SHA-256 DigestInfo prefix (RFC 8017, section 9.2, note 1).
const SHA256_DIGEST_INFO: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];

/// OID 1.2.840.113549.1.1.1 (rsaEncryption), DER content bytes.
const RSA_ENCRYPTION_OID: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

impl RsaKey {
    /// A PKCS#8 `PrivateKeyInfo` (PEM "PRIVATE KEY") holding an RSA key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<RsaKey, KeyFault> {
        let mut outer = Der::new(der).sequence()?;
        outer.integer()?;
        let mut algorithm = outer.sequence()?;
        if algorithm.element(0x06)? != RSA_ENCRYPTION_OID {
            return Err(KeyFault("not an RSA key"));
        }
        let private_key = outer.element(0x04)?;
        RsaKey::from_pkcs1_der(private_key)
    }

    /// A PKCS#1 `RSAPrivateKey` (PEM "RSA PRIVATE KEY").
    pub fn from_pkcs1_der(der: &[u8]) -> Result<RsaKey, KeyFault> {
        let mut fields = Der::new(der).sequence()?;
        if !trim(from_be_bytes(fields.integer()?)).is_empty() {
            return Err(KeyFault("multi-prime RSA keys are not supported"));
        }
        let mut next = || fields.integer().map(|bytes| trim(from_be_bytes(bytes)));
        let modulus = next()?;
        let public_exponent = next()?;
        let _private_exponent = next()?;
        let key = RsaKey {
            modulus,
            public_exponent,
            prime_p: next()?,
            prime_q: next()?,
            exponent_p: next()?,
            exponent_q: next()?,
            coefficient: next()?,
        };
        if key.bits() < 1024 {
            return Err(KeyFault("RSA key shorter than 1024 bits"));
        }
        let odd = |limbs: &Limbs| limbs.first().is_some_and(|low| low & 1 == 1);
        if !odd(&key.modulus) || !odd(&key.prime_p) || !odd(&key.prime_q) || key.public_exponent.is_empty() {
            return Err(KeyFault("inconsistent RSA key"));
        }
        Ok(key)
    }

    pub fn bits(&self) -> usize {
        bit_length(&self.modulus)
    }

    /// The RS256 signature of `message`, checked with the public key before it is returned so
    /// that a key whose parts do not belong together fails here, not at the token endpoint.
    pub fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, KeyFault> {
        let size = self.bits().div_ceil(8);
        let padding = size
            .checked_sub(3 + SHA256_DIGEST_INFO.len() + 32)
            .filter(|padding| *padding >= 8)
            .ok_or(KeyFault("RSA key too short for SHA-256"))?;
        let mut encoded = Vec::with_capacity(size);
        encoded.extend_from_slice(&[0x00, 0x01]);
        encoded.resize(2 + padding, 0xff);
        encoded.push(0x00);
        encoded.extend_from_slice(&SHA256_DIGEST_INFO);
        encoded.extend_from_slice(&sha256::digest(message));
        let representative = trim(from_be_bytes(&encoded));

        let p = Modulus::new(&self.prime_p)?;
        let q = Modulus::new(&self.prime_q)?;
        let n = Modulus::new(&self.modulus)?;
        let m1 = p.pow(&representative, &self.exponent_p);
        let m2 = q.pow(&representative, &self.exponent_q);
        // h = coefficient * (m1 - m2) mod p; signature = m2 + h * q.
        let difference = p.sub(&m1, &p.reduce(&m2));
        let h = p.mul(&p.to_montgomery(&p.reduce(&self.coefficient)), &difference);
        let signature = trim(add(&mul(&h, &self.prime_q), &m2));

        if n.pow(&signature, &self.public_exponent) != n.reduce(&representative) {
            return Err(KeyFault("inconsistent RSA key"));
        }
        Ok(to_be_bytes(&signature, size))
    }
}

/// The modulus of Montgomery arithmetic: `mul(a, b)` is a*b/R mod m with R = 2^(32 k).
struct Modulus {
    m: Limbs,
    /// -m^-1 mod 2^32.
    m_prime: u32,
    /// R^2 mod m.
    r_squared: Limbs,
}

impl Modulus {
    fn new(m: &Limbs) -> Result<Modulus, KeyFault> {
        let m = trim(m.clone());
        let low = *m.first().filter(|low| *low & 1 == 1).ok_or(KeyFault("inconsistent RSA key"))?;
        let mut inverse: u32 = 1;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u32.wrapping_sub(low.wrapping_mul(inverse)));
        }
        let mut r_squared_plain = vec![0u32; 2 * m.len()];
        r_squared_plain.push(1);
        let r_squared = remainder(&r_squared_plain, &m);
        Ok(Modulus { m_prime: inverse.wrapping_neg(), r_squared, m })
    }

    fn k(&self) -> usize {
        self.m.len()
    }

    fn mul(&self, a: &[u32], b: &[u32]) -> Limbs {
        let k = self.k();
        let (a, b) = (&a[..a.len().min(k)], &b[..b.len().min(k)]);
        let mut t = vec![0u32; 2 * k + 1];
        for (i, &ai) in a.iter().enumerate() {
            let mut carry = 0u64;
            for (tj, &bj) in t[i..].iter_mut().zip(b) {
                let sum = u64::from(*tj) + u64::from(ai) * u64::from(bj) + carry;
                *tj = sum as u32;
                carry = sum >> 32;
            }
            t[i + b.len()] = carry as u32;
        }
        // Add u*m at limb i so that limb i becomes 0; then the upper half is a*b/R mod m (< 2m).
        for i in 0..k {
            let u = u64::from(t[i].wrapping_mul(self.m_prime));
            let mut carry = 0u64;
            for (tj, &mj) in t[i..].iter_mut().zip(&self.m) {
                let sum = u64::from(*tj) + u * u64::from(mj) + carry;
                *tj = sum as u32;
                carry = sum >> 32;
            }
            for tj in &mut t[i + k..] {
                if carry == 0 {
                    break;
                }
                let sum = u64::from(*tj) + carry;
                *tj = sum as u32;
                carry = sum >> 32;
            }
        }
        let mut result = t.split_off(k);
        if compare(&result, &self.m) != std::cmp::Ordering::Less {
            subtract_in_place(&mut result, &self.m);
        }
        result.truncate(k);
        result
    }

    fn reduce(&self, x: &[u32]) -> Limbs {
        let mut r = remainder(x, &self.m);
        r.resize(self.k(), 0);
        r
    }

    fn to_montgomery(&self, x: &[u32]) -> Limbs {
        self.mul(x, &self.r_squared)
    }

    fn sub(&self, a: &[u32], b: &[u32]) -> Limbs {
        let mut result = a.to_vec();
        if compare(a, b) == std::cmp::Ordering::Less {
            result = add(&result, &self.m);
        }
        subtract_in_place(&mut result, b);
        result.resize(self.k(), 0);
        result
    }

    /// base^exponent mod m, in normal (not Montgomery) form, four exponent bits at a time.
    fn pow(&self, base: &[u32], exponent: &[u32]) -> Limbs {
        let one = self.to_montgomery(&self.reduce(&[1]));
        let mut powers = vec![one.clone(), self.to_montgomery(&self.reduce(base))];
        for _ in 2..16 {
            let next = self.mul(&powers[powers.len() - 1], &powers[1]);
            powers.push(next);
        }
        let mut accumulator = one;
        for window in (0..bit_length(exponent).div_ceil(4)).rev() {
            for _ in 0..4 {
                accumulator = self.mul(&accumulator, &accumulator);
            }
            let bits = (exponent[window / 8] >> (window % 8 * 4)) & 0xf;
            if bits != 0 {
                accumulator = self.mul(&accumulator, &powers[bits as usize]);
            }
        }
        trim(self.mul(&accumulator, &[1]))
    }
}

fn from_be_bytes(bytes: &[u8]) -> Limbs {
    bytes
        .rchunks(4)
        .map(|chunk| chunk.iter().fold(0u32, |limb, byte| limb << 8 | u32::from(*byte)))
        .collect()
}

fn to_be_bytes(limbs: &[u32], size: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|limb| limb.to_le_bytes()).collect();
    bytes.resize(size, 0);
    bytes.reverse();
    bytes
}

fn trim(mut limbs: Limbs) -> Limbs {
    while limbs.last() == Some(&0) {
        limbs.pop();
    }
    limbs
}

fn bit_length(limbs: &[u32]) -> usize {
    match limbs.iter().rposition(|limb| *limb != 0) {
        Some(top) => top * 32 + 32 - limbs[top].leading_zeros() as usize,
        None => 0,
    }
}

fn compare(a: &[u32], b: &[u32]) -> std::cmp::Ordering {
    let length = a.len().max(b.len());
    for i in (0..length).rev() {
        let (x, y) = (a.get(i).copied().unwrap_or(0), b.get(i).copied().unwrap_or(0));
        if x != y {
            return x.cmp(&y);
        }
    }
    std::cmp::Ordering::Equal
}

fn add(a: &[u32], b: &[u32]) -> Limbs {
    let length = a.len().max(b.len());
    let mut sum = Vec::with_capacity(length + 1);
    let mut carry = 0u64;
    for i in 0..length {
        let s = u64::from(a.get(i).copied().unwrap_or(0)) + u64::from(b.get(i).copied().unwrap_or(0)) + carry;
        sum.push(s as u32);
        carry = s >> 32;
    }
    sum.push(carry as u32);
    sum
}

/// a -= b, for a >= b.
fn subtract_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0i64;
    for (i, limb) in a.iter_mut().enumerate() {
        let d = i64::from(*limb) - i64::from(b.get(i).copied().unwrap_or(0)) - borrow;
        *limb = d.rem_euclid(1 << 32) as u32;
        borrow = i64::from(d < 0);
    }
}

fn mul(a: &[u32], b: &[u32]) -> Limbs {
    let mut product = vec![0u32; a.len() + b.len()];
    for (i, ai) in a.iter().enumerate() {
        let mut carry = 0u64;
        for (j, bj) in b.iter().enumerate() {
            let s = u64::from(product[i + j]) + u64::from(*ai) * u64::from(*bj) + carry;
            product[i + j] = s as u32;
            carry = s >> 32;
        }
        product[i + b.len()] = carry as u32;
    }
    product
}

/// x mod m by shift and subtract: only for the few reductions outside the exponentiations.
fn remainder(x: &[u32], m: &[u32]) -> Limbs {
    let mut r = vec![0u32; m.len() + 1];
    for bit in (0..bit_length(x)).rev() {
        let mut carry = x[bit / 32] >> (bit % 32) & 1;
        for limb in r.iter_mut() {
            let next = *limb >> 31;
            *limb = *limb << 1 | carry;
            carry = next;
        }
        if compare(&r, m) != std::cmp::Ordering::Less {
            subtract_in_place(&mut r, m);
        }
    }
    trim(r)
}

/// A reader of the few DER elements a private key holds.
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Der<'a> {
        Der { rest: bytes }
    }

    fn element(&mut self, tag: u8) -> Result<&'a [u8], KeyFault> {
        let malformed = KeyFault("malformed DER");
        let (&found, rest) = self.rest.split_first().ok_or(malformed.clone())?;
        if found != tag {
            return Err(KeyFault("unexpected DER element"));
        }
        let (&first, mut rest) = rest.split_first().ok_or(malformed.clone())?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(malformed);
            }
            // `get`, not `split_at`: see "A trap for anyone adding a parser" in docs/benchmarks.md.
            let length_bytes = rest.get(..count).ok_or(malformed.clone())?;
            rest = rest.get(count..).ok_or(malformed.clone())?;
            length_bytes.iter().fold(0usize, |length, byte| length << 8 | usize::from(*byte))
        };
        if rest.len() < length {
            return Err(malformed);
        }
        self.rest = rest.get(length..).ok_or(malformed.clone())?;
        rest.get(..length).ok_or(malformed)
    }

    fn sequence(&mut self) -> Result<Der<'a>, KeyFault> {
        self.element(0x30).map(Der::new)
    }

    /// The big-endian magnitude of a non-negative INTEGER.
    fn integer(&mut self) -> Result<&'a [u8], KeyFault> {
        let content = self.element(0x02)?;
        if content.first().is_some_and(|first| first & 0x80 != 0) {
            return Err(KeyFault("negative DER integer"));
        }
        Ok(content)
    }
}

#[cfg(test)]
impl RsaKey {
    pub fn tamper_for_test(&mut self) {
        if let Some(low) = self.coefficient.first_mut() {
            *low ^= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_number_helpers_agree_with_plain_arithmetic() {
        let m = vec![0xffff_fff1u32, 0x1234_5678, 0x0000_0003];
        let modulus = Modulus::new(&m).unwrap();
        let a = vec![0x1111_1111u32, 0x2222_2222, 0x1];
        let b = vec![0x9999_9999u32, 0x0000_0007, 0x2];
        let product = modulus.mul(&modulus.to_montgomery(&a), &b);
        assert_eq!(trim(product), remainder(&mul(&a, &b), &m));
        let x = from_be_bytes(&[0x01, 0x02, 0x03, 0x04, 0x05]);
        assert_eq!(x, vec![0x0203_0405, 0x01]);
        assert_eq!(to_be_bytes(&x, 6), vec![0, 1, 2, 3, 4, 5]);
        // 3^5 mod 7 = 5.
        assert_eq!(Modulus::new(&vec![7]).unwrap().pow(&[3], &[5]), vec![5]);
    }

    #[test]
    fn der_reader_refuses_truncated_and_wrong_elements() {
        assert_eq!(Der::new(&[0x30, 0x05, 0x02]).sequence().err(), Some(KeyFault("malformed DER")));
        assert_eq!(Der::new(&[0x02, 0x01, 0x01]).sequence().err(), Some(KeyFault("unexpected DER element")));
        assert_eq!(Der::new(&[0x02, 0x01, 0x81]).integer().err(), Some(KeyFault("negative DER integer")));
        assert_eq!(Der::new(&[0x30, 0x85, 0, 0, 0, 0, 1]).sequence().err(), Some(KeyFault("malformed DER")));
        assert_eq!(RsaKey::from_pkcs1_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).unwrap_err(), KeyFault("malformed DER"));
        assert_eq!(RsaKey::from_pkcs1_der(&[0x30, 0x03, 0x02, 0x01, 0x01]).unwrap_err(), KeyFault("multi-prime RSA keys are not supported"));
    }
}
