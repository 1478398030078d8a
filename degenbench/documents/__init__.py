"""Documents: the record, the sources and the split."""
from degenbench.documents.record import FIELDS, BadDocument, Document, iter_pages, open_pages, plain_text, truth_json
from degenbench.documents.sources import Split, load_documents, load_split, split

__all__ = ["FIELDS", "BadDocument", "Document", "Split", "load_documents", "iter_pages", "load_split", "open_pages", "plain_text", "split", "truth_json"]
