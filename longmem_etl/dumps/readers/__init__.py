"""The dump readers, one module per way of reading (as dlt splits its ``items_normalizers``):
``whole`` (msgspec over a mapped .json), ``guessed`` (spans for convert's workers), ``jsonl``,
``streaming`` (ijson); ``base`` is what they all yield and ``compressed`` opens the files.
``dumps.read.open_dump`` picks one."""
