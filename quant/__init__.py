"""clova_edge.quant"""
