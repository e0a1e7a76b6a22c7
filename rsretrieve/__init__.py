"""rsretrieve: text and image search over remote-sensing archives."""

import os

# torch and FAISS each bring an OpenMP runtime; their idle threads spin for a while after every parallel
# region and starve the other one (a text query went from ~0.1 s to 0.5-1.2 s on 2 cores). Set before either
# is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
