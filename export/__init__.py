"""clova_edge.export"""
