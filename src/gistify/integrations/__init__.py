"""gistify inside RAG frameworks. Import the module of the framework you use; nothing here imports one:

    from gistify.integrations.langchain import GistifyCompressor      # pip install 'gistify[langchain]'
    from gistify.integrations.llamaindex import GistifyPostprocessor  # pip install 'gistify[llamaindex]'

Both compress the retrieved passages for the query under one budget for all of them by default
(passages.py says how), and record in each passage's metadata, under "gistify", its tokens in and out and
the kept spans, [start, end) offsets into the passage's original text.
"""
