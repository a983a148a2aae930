//! The processor's signature over every OpenDSR answer and callback (§4.2, §8.8): RSA PKCS#1 v1.5 with SHA-256
//! over the raw body, base64 (standard alphabet), with the key of the certificate that discovery's
//! `processor_certificate` serves.
//!
//! The key file is one PEM text holding a `PRIVATE KEY` block (PKCS#8; `RSA PRIVATE KEY` is accepted too) and a
//! `CERTIFICATE` block. [`generate_self_signed`] makes such a file for the local runtime; on AWS it is provisioned
//! with a CA-issued certificate, as the spec asks (§4.1).

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tributary_core::dsr::Signer;
use tributary_core::ports::PortError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Signs with an RSA key whose certificate is served to controllers. The private key never leaves this type (not
/// even through `Debug`).
pub struct RsaSigner {
    key: KeyPair,
    rng: SystemRandom,
    /// The `CERTIFICATE` block only, re-encoded from DER, so nothing else of the key file can be served.
    certificate_pem: String,
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaSigner").field("modulus_bits", &(self.key.public_modulus_len() * 8)).finish_non_exhaustive()
    }
}

impl RsaSigner {
    /// Reads the key and the certificate from one PEM text and checks that they belong together.
    pub fn from_pem(text: &str) -> Result<RsaSigner, String> {
        let key = match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
            Ok(PrivateKeyDer::Pkcs8(der)) => KeyPair::from_pkcs8(der.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Pkcs1(der)) => KeyPair::from_der(der.secret_pkcs1_der()),
            Ok(_) => return Err("the signing key must be an RSA key (PEM `PRIVATE KEY`, PKCS#8)".into()),
            Err(e) => return Err(format!("the signing key file holds no readable `PRIVATE KEY` block ({e})")),
        }
        .map_err(|e| format!("the signing key is not a usable RSA private key ({e})"))?;
        if key.public_modulus_len() < 256 {
            return Err(format!(
                "the signing key has {} bits; controllers verify RSA keys of 2048 bits or more",
                key.public_modulus_len() * 8
            ));
        }
        let cert = CertificateDer::from_pem_slice(text.as_bytes())
            .map_err(|e| format!("the signing key file holds no readable `CERTIFICATE` block ({e})"))?;
        let signer = RsaSigner { key, rng: SystemRandom::new(), certificate_pem: pem_encode("CERTIFICATE", &cert) };
        // A certificate of another key would make every answer fail verification at the controller: refuse to start.
        // The same public key, byte for byte, settles it without an RSA signature (~0.5 ms of every cold start);
        // otherwise (another encoding of the same key, or another key) a probe signature decides.
        if same_public_key(&signer.key, &cert) {
            return Ok(signer);
        }
        let probe = b"tributary signing key check";
        let signature = signer.sign(probe).map_err(|e| format!("the signing key cannot sign ({e})"))?;
        verify(&signer.certificate_pem, probe, &signature).map_err(|e| {
            format!("the certificate does not match the private key: its public key is another key's ({e})")
        })?;
        Ok(signer)
    }
}

impl Signer for RsaSigner {
    fn sign(&self, body: &[u8]) -> Result<String, PortError> {
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, body, &mut signature)
            .map_err(|_| PortError::Invalid("RSA signing failed".into()))?;
        Ok(B64.encode(signature))
    }

    fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }
}

/// A fresh 2048-bit RSA key and a self-signed certificate for `domain` (its subject alternative name and common
/// name), valid from a day ago for ten years, as one PEM text (key, then certificate) that
/// [`RsaSigner::from_pem`] reads. For the local runtime and tests: real controllers want a CA-issued certificate.
pub fn generate_self_signed(domain: &str) -> Result<String, String> {
    // The processor domain may carry a port (`localhost:3000`); a certificate names hosts only.
    let host = match domain.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => domain,
    };
    if host.is_empty() {
        return Err("a certificate needs a domain name".into());
    }
    let key = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed".to_string())?;
    let pkcs8 = key.as_der().map_err(|_| "the new RSA key could not be encoded".to_string())?;
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_ref());
    let rc_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| format!("the new RSA key could not be used for a certificate ({e})"))?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
        .map_err(|e| format!("{host:?} cannot name a certificate ({e})"))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, host);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let cert = params.self_signed(&rc_key).map_err(|e| format!("the certificate could not be signed ({e})"))?;
    Ok(format!("{}{}", rc_key.serialize_pem(), cert.pem()))
}

/// Checks `signature_b64` over `body` against the certificate in `cert_pem` the way a controller does (§8.8):
/// the certificate's public key, RSA PKCS#1 v1.5, SHA-256, 2048 to 8192 bits. Checks neither the certificate's
/// issuer nor its dates. For tests, callback receivers and the load-time check.
pub fn verify(cert_pem: &str, body: &[u8], signature_b64: &str) -> Result<(), String> {
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("no readable `CERTIFICATE` block ({e})"))?;
    let cert = webpki::EndEntityCert::try_from(&cert).map_err(|e| format!("the certificate cannot be parsed ({e})"))?;
    let signature = B64.decode(signature_b64.trim()).map_err(|_| "the signature is not base64".to_string())?;
    cert.verify_signature(webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256, body, &signature)
        .map_err(|e| format!("the signature does not verify ({e})"))
}

/// Whether the certificate's SubjectPublicKeyInfo is exactly the key pair's public key (X.509 DER).
fn same_public_key(key: &KeyPair, cert: &CertificateDer<'_>) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else { return false };
    let Ok(public) = key.public_key().as_der() else { return false };
    public.as_ref() == cert.subject_public_key_info().as_ref()
}

/// DER as a PEM block with 64-character lines.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../events/dsr/signing.pem");

    #[test]
    fn signatures_verify_against_the_certificate_and_only_for_the_body_signed() {
        let signer = RsaSigner::from_pem(FIXTURE).expect("fixture");
        let body = br#"{"subject_request_id":"a7551968-d5d6-44b2-9831-815ac9017798"}"#;
        let sig = signer.sign(body).expect("sign");
        assert_eq!(B64.decode(&sig).expect("base64").len(), 256);
        verify(signer.certificate_pem(), body, &sig).expect("verifies");
        let mut changed = body.to_vec();
        changed[5] ^= 1;
        assert!(verify(signer.certificate_pem(), &changed, &sig).is_err());
        assert!(verify(signer.certificate_pem(), body, "bm90IGEgc2lnbmF0dXJl").is_err());
        assert!(verify(signer.certificate_pem(), body, "%%%").is_err());
    }

    #[test]
    fn the_served_certificate_holds_no_key() {
        let signer = RsaSigner::from_pem(FIXTURE).expect("fixture");
        let pem = signer.certificate_pem();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(!pem.contains("PRIVATE"));
        assert!(!format!("{signer:?}").contains("BEGIN"));
        // The re-encoded block is the file's own certificate.
        let original = CertificateDer::from_pem_slice(FIXTURE.as_bytes()).expect("cert");
        let served = CertificateDer::from_pem_slice(pem.as_bytes()).expect("cert");
        assert_eq!(original, served);
    }

    #[test]
    fn generated_certificates_name_the_domain_and_a_mismatch_is_refused() {
        let pem = generate_self_signed("dsr.example.com:8443").expect("generate");
        let signer = RsaSigner::from_pem(&pem).expect("a generated file loads");
        let der = CertificateDer::from_pem_slice(signer.certificate_pem().as_bytes()).expect("cert");
        let cert = webpki::EndEntityCert::try_from(&der).expect("parses");
        let name = rustls_pki_types::ServerName::try_from("dsr.example.com").expect("name");
        cert.verify_is_valid_for_subject_name(&name).expect("the SAN names the domain, without the port");
        let other = rustls_pki_types::ServerName::try_from("other.example.com").expect("name");
        assert!(cert.verify_is_valid_for_subject_name(&other).is_err());

        // The fixture's key with the new certificate: a different public key.
        let key_block = FIXTURE.split("-----BEGIN CERTIFICATE-----").next().expect("key block");
        let err = RsaSigner::from_pem(&format!("{key_block}{}", signer.certificate_pem())).expect_err("mismatch");
        assert!(err.contains("does not match the private key"), "{err}");
        // The quick check (no signature) decides both ways for keys and certificates encoded as usual.
        let fixture = RsaSigner::from_pem(FIXTURE).expect("fixture");
        let fixture_cert = CertificateDer::from_pem_slice(FIXTURE.as_bytes()).expect("cert");
        assert!(same_public_key(&fixture.key, &fixture_cert));
        assert!(same_public_key(&signer.key, &der));
        assert!(!same_public_key(&fixture.key, &der));
    }

    #[test]
    fn incomplete_files_are_refused_clearly() {
        let key_block = FIXTURE.split("-----BEGIN CERTIFICATE-----").next().expect("key block");
        let cert_block = &FIXTURE[key_block.len()..];
        let err = RsaSigner::from_pem(key_block).expect_err("no certificate");
        assert!(err.contains("CERTIFICATE"), "{err}");
        let err = RsaSigner::from_pem(cert_block).expect_err("no key");
        assert!(err.contains("PRIVATE KEY"), "{err}");
        assert!(RsaSigner::from_pem("").is_err());
        assert!(RsaSigner::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
    }
}
