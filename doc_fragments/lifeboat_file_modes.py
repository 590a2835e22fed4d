"""Documentation of the file mode options (module_utils/lifeboat/options.py: file_modes_spec)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  file_mode:
    description:
      - Mode of the files written locally (synced, restored or extracted), an octal string (quote it in YAML,
        for example C("0600")). M(lifeboat_archive) has no default (extracted files keep their archived mode).
    type: str
    default: "0600"
  dir_mode:
    description:
      - Mode of the directories created locally, an octal string (for example C("0700")).
        M(lifeboat_archive) has no default (extracted directories keep their archived mode).
    type: str
    default: "0700"
"""
