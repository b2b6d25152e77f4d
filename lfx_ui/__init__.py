"""Streamlit-side helpers of LFX Explorer: rendering, selection state, downloads.

Nothing here does science; it converts engine outputs into pictures and widgets.
"""
