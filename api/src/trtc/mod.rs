//! TRTC's rules: UserSig (TLSSigAPIv2) and TC3-HMAC-SHA256 request signing.

pub mod push_auth;
pub mod tc3;
pub mod usersig;
