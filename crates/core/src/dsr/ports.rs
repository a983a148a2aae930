//! The two things DSR answers need beyond the stores: a signature over each body, and time-limited links to
//! exports. Implementations: RSA with SHA-256 (`tributary-dsr-api`'s `RsaSigner`), S3 presigned URLs on AWS and
//! HMAC-signed local URLs in `tributary serve`.

use std::future::Future;

use crate::ports::PortError;

/// Signs OpenDSR responses and callbacks (§4.2, §8.8): the controller checks the signature against the raw body
/// with the key of the certificate named by discovery's `processor_certificate`.
pub trait Signer: Send + Sync {
    /// Base64 of the RSA PKCS#1 v1.5 signature over SHA-256 of `body`.
    fn sign(&self, body: &[u8]) -> Result<String, PortError>;
    /// The certificate (PEM) whose key verifies the signatures.
    fn certificate_pem(&self) -> &str;
}

/// Makes a link to an export object that stops working at `expires_at_ms`.
pub trait ResultLinks: Send + Sync {
    fn link(&self, key: &str, expires_at_ms: i64) -> impl Future<Output = Result<String, PortError>> + Send;
}

/// The header names a signed answer carries: OpenDSR's, or OpenGDPR's on the legacy routes.
pub fn signature_headers(legacy: bool) -> (&'static str, &'static str) {
    if legacy {
        ("x-opengdpr-processor-domain", "x-opengdpr-signature")
    } else {
        ("x-opendsr-processor-domain", "x-opendsr-signature")
    }
}

impl<S: Signer + ?Sized> Signer for std::sync::Arc<S> {
    fn sign(&self, body: &[u8]) -> Result<String, PortError> {
        (**self).sign(body)
    }
    fn certificate_pem(&self) -> &str {
        (**self).certificate_pem()
    }
}
