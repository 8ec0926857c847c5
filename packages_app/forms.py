"""Forms of the admin's own pages (the ModelAdmins build the model forms)."""
from django import forms


class CatalogueImportForm(forms.Form):
    file = forms.FileField(help_text="JSON as Kombo receives it ({\"packages\": [...]}) or CSV with "
                                     "the columns id, type, name, description. UTF-8.")
    format = forms.ChoiceField(
        choices=[("", "Detect from the file name"), ("json", "JSON"), ("csv", "CSV")], required=False
    )
