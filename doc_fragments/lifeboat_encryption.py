"""Documentation of the encryption options (module_utils/lifeboat/options.py: encryption_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  encryption:
    description:
      - C(gpg) (OpenPGP public keys from O(encryption_recipients), or a symmetric O(encryption_passphrase)),
        C(age) (recipients only), or C(none).
      - Keys are checked before anything is written.
    type: str
    choices: [none, gpg, age]
    default: none
  encryption_recipients:
    description:
      - For C(gpg), ASCII-armored public key files; their fingerprints are recorded in the manifest.
      - For C(age), recipients (C(age1...)) or recipients files.
    type: list
    elements: str
    default: []
  encryption_passphrase:
    description: Passphrase for gpg symmetric (AES256) encryption, passed through a file descriptor. Never logged.
    type: str
"""
