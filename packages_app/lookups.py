"""`field__any_of=[...]`: membership in a list of values, sent to PostgreSQL as one array
parameter (`= ANY(%s)`) instead of one parameter per value. With thousands of integration ids
(a sync-status filter over 5,000 integrations), binding each value costs more than the query.
Other databases get the plain `IN (...)`."""
from django.db.models import Field, ForeignKey, Lookup


class AnyOf(Lookup):
    lookup_name = "any_of"
    prepare_rhs = False

    def get_prep_lookup(self):
        field = self.lhs.output_field
        return [field.get_prep_value(value) for value in self.rhs]

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = list(self.rhs)
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(%s)", [*lhs_params, values]
        if not values:
            return "1 = 0", list(lhs_params)
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", [*lhs_params, *values]


Field.register_lookup(AnyOf)
ForeignKey.register_lookup(AnyOf)  # related fields keep lookups of their own
