"""The Streamlit app: a thin shell over :mod:`workbench.services`.

``main.py`` is the entry file (``workbench app`` runs ``streamlit run`` on it);
it signs the user in and routes with ``st.navigation`` to one module per page
under ``pages/``. Pages call services and render their dataclasses; they
compute nothing.
"""
