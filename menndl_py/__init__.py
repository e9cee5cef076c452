"""menndl_py: evolutionary neural architecture search for deep materials informatics."""
