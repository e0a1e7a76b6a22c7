"""Write side of rsretrieve: reading archives into chips, embedding them, building the index."""
