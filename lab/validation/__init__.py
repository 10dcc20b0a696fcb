"""The validation package (21 CFR 11.10(a), EU GMP Annex 11 §4): the requirements list and the
report that traces each requirement to the tests of a run (``flask --app lab validation-report``)."""
