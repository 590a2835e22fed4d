"""Documentation of the decryption options (module_utils/lifeboat/options.py: decryption_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  gpg_homedir:
    description: Existing gpg home directory holding the secret key that decrypts gpg-encrypted artifacts.
    type: path
  gpg_key_file:
    description:
      - ASCII-armored gpg secret key file, imported into a private, temporary gpg home (removed afterwards).
    type: path
    aliases: [secret_key_file]
  decryption_passphrase:
    description:
      - Passphrase of a symmetric gpg artifact, handed to gpg through a pipe, never logged or returned.
    type: str
    aliases: [passphrase]
  age_identity_file:
    description: age identity file that decrypts age-encrypted artifacts.
    type: path
    aliases: [identity_file]
"""
