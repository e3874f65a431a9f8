//! SIP edge security: digest auth, nonces, throttling, ban list, toll-fraud guard (sans-IO)
