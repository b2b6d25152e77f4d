"""The reproduction study's own trained models: their repository layout, key mapping and importer."""
from lfx_engine.study.convert import convert_state
from lfx_engine.study.importer import REPOSITORY, ImportReport, import_study
from lfx_engine.study.layout import StudyFile, expected_files

__all__ = ["REPOSITORY", "ImportReport", "StudyFile", "convert_state", "expected_files", "import_study"]
