"""ElemNet: formation enthalpy from composition (OQMD)."""
