"""Messages, their CBOR codec, framing and frame authentication."""
