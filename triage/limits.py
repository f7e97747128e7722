"""Size limits checked on a header before anything decodes or allocates its pixels.

The receiver refuses an instance that declares more (0xA900, with the reason); volume assembly
refuses a series that would. CT and MR frames are 512-1024 pixels a side; 4096 leaves room for
any scanner.
"""

#: The largest frame accepted, per side.
MAX_FRAME_SIDE = 4096
#: The largest volume, in voxels (4 GiB as float32).
MAX_VOXELS = 1 << 30
#: Decoded pixel bytes per instance: e.g. an enhanced CT of 2000 frames of 512 x 512 x 16 bits.
MAX_PIXEL_BYTES = 1 << 30
