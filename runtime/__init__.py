"""clova_edge.runtime"""
