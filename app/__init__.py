"""The Streamlit search page (``rsretrieve app``) and its small helpers; all searching goes through ``Searcher``."""
