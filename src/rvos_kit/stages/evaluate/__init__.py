"""stages/evaluate"""
